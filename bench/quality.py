"""Model quality and training cost on the sample generator, against baselines and the oracle.

    python bench/quality.py [--orgs 12000] [--seed 7] [--dictionaries dictionaries] [--no-gbt]

1. generates a synthetic CRM with `training.sample` (its true probabilities are the oracle);
2. times `python -m training.fit --no-baselines` in a child process (wall time, peak RSS);
3. runs the fit again in-process with every baseline (gradient-boosted trees included) and the
   oracle on the same split, and prints the evaluation table plus the network/oracle ratios.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dictionaries", type=Path, default=REPO / "dictionaries")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--no-gbt", action="store_true", help="skip the slow gradient-boosted-trees baseline")
    parser.add_argument("--skip-timing", action="store_true", help="skip the separate timed training run")
    args = parser.parse_args()

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        data, models = Path(tmp) / "crm", Path(tmp) / "models"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "training.sample", "--output", str(data), "--orgs", str(args.orgs),
             "--seed", str(args.seed), "--dictionaries", str(args.dictionaries)],
            check=True, env=env, cwd=REPO,
        )
        print(f"generated {args.orgs} organizations in {time.perf_counter() - started:.1f} s")
        outcomes = pd.read_csv(data / "outcomes.csv", dtype=str)
        print(f"outcome rows: {len(outcomes):,}")

        common = ["--data", str(data), "--dictionaries", str(args.dictionaries), "--seed", str(args.seed)]
        if args.config:
            common += ["--config", str(args.config)]
        if not args.skip_timing:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "training.fit", *common, "--output", str(models / "timed"), "--no-baselines",
                 "--quiet"],
                check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - started
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
            print(f"training job (fit --no-baselines, whole process): {wall:.1f} s wall, {peak:.2f} GiB peak RSS")

        from training.fit import fit, parse_args

        fit_args = parse_args([*common, "--output", str(models / "full"), *([] if args.no_gbt else ["--gbt"])])
        oracle = pd.read_parquet(data / "oracle.parquet")
        result = fit(fit_args, oracle=oracle)
        print(result.table)
        print(f"network training time: {result.manifest['timings']['train_network_s']} s "
              f"(best epoch {result.manifest['data']['best_epoch']})")
        ratios(result.manifest["metrics"]["segments"]["all"]["metrics"])


def ratios(methods: dict) -> None:
    """Print each method's overall NDCG@5 and micro-F1 as a share of the oracle's."""
    oracle = methods.get("oracle")
    if not oracle:
        print("no oracle figures")
        return
    print("\nshare of the oracle (test split, all episodes):")
    for name, m in methods.items():
        ndcg, f1 = m["ndcg@5"] / oracle["ndcg@5"], m["micro_f1"] / oracle["micro_f1"]
        print(f"  {name:20s} ndcg@5 {ndcg:.3f}   micro_f1 {f1:.3f}")


if __name__ == "__main__":
    main()
