"""Recommendation quality per firm shape: the network against its peers and the generator's oracle.

    python bench/quality.py [--scenarios bundled,bundled_positive_only,b_like,other_firm] [--scale 1.0]
                            [--seed 7] [--gbt] [--network-only] [--timed-fit] [--fit-orgs 7300]

Each scenario is one firm the project has never seen: dictionaries (the repo's, the 30-characteristic
fixture, or a made-up 240-characteristic firm written by `training.sample.firm_dictionaries` into a
temporary directory) plus a `training.sample` shape. For each: generate the CRM (CSV files in a
temporary directory), run `training.fit` in-process with every baseline and the oracle on the same
time split, and print per method its test NDCG@5, its share of the oracle's NDCG@5 and its time
(fit + predict; the network's includes its configuration search), then the configuration the search
chose and the precision of what the card shows for each cap. `--scale` multiplies the organization
counts (0.2 for a quick look while developing). `--timed-fit` also times `python -m training.fit`
as a child process on the bundled firm at `--fit-orgs` organizations (≈ 60k episodes at 7,300).
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Scenario:
    """One firm: where its dictionaries come from, its generator shape, its size, and the target."""

    dictionaries: str  # "repo", "other_firm" or "b_like" (made up into a temporary directory)
    shape: str
    orgs: int
    target: float | None  # the share of the oracle's NDCG@5 the network must reach (issue 12)
    note: str


SCENARIOS: dict[str, Scenario] = {
    "bundled": Scenario("repo", "bundled", 7300, 0.97, "repo dictionaries (67 characteristics, 5 stages), explicit "
                        "negatives recorded, as the bundled sample"),
    "bundled_positive_only": Scenario("repo", "positive_only", 7300, 0.97, "the same firm when the CRM logs only "
                                      "positive outcomes (like firm A of issue 12)"),
    "b_like": Scenario("b_like", "b_like", 6000, 0.90, "240 characteristics, 4 stages, positive-only, 20% rare "
                       "(≤0.5% base rate), industry-group × position-group interactions, size steps, owned products"),
    "other_firm": Scenario("other_firm", "positive_only", 6000, None, "tests/fixtures/other_firm (30 "
                           "characteristics, 4 stages), positive-only"),
}  # fmt: skip


def dictionaries_for(kind: str, root: Path) -> Path:
    from training.sample import firm_dictionaries

    if kind == "repo":
        return REPO / "dictionaries"
    if kind == "other_firm":
        return REPO / "tests" / "fixtures" / "other_firm"
    return firm_dictionaries(root / "b_like_dictionaries", characteristics=240, stages=4, seed=11)


def run_scenario(name: str, scenario: Scenario, args: argparse.Namespace, root: Path) -> dict:
    from needs_rec.dictionaries import load
    from training import sample
    from training.fit import fit, parse_args

    orgs = max(200, round(scenario.orgs * args.scale))
    dicts_dir = dictionaries_for(scenario.dictionaries, root)
    started = time.perf_counter()
    data = sample.generate(load(dicts_dir), n_orgs=orgs, seed=args.seed, shape=scenario.shape)
    crm = sample.write(data, root / f"{name}_crm")
    print(f"\n=== {name}: {scenario.note}\n{orgs} organizations, {data.stats['episodes']} episodes, "
          f"{data.stats['outcome_rows']} outcome rows, generated in {time.perf_counter() - started:.1f} s")  # fmt: skip
    fit_args = parse_args(["--data", str(crm), "--dictionaries", str(dicts_dir), "--output", str(root / f"{name}_m"),
                           "--seed", str(args.seed), "--quiet", *(["--gbt"] if args.gbt else []),
                           *(["--no-baselines"] if args.network_only else [])])  # fmt: skip
    result = fit(fit_args, oracle=pd.read_parquet(crm / sample.ORACLE_FILE))
    manifest = result.manifest
    print_table(manifest, scenario.target)
    if manifest.get("search"):
        search = manifest["search"]
        print(f"search: {len(search['trials'])} trials in {search['elapsed_s']} s"
              f"{' (cut by the time budget)' if search['stopped_by_budget'] else ''}; chose trial "
              f"{search['chosen_trial']}: {search['chosen']}")  # fmt: skip
    card = manifest["metrics"].get("card")
    if card:
        print_card(card)
    return manifest


def print_table(manifest: dict, target: float | None) -> None:
    methods = manifest["metrics"]["segments"]["all"]["metrics"]
    timings = manifest["timings"]
    oracle = methods.get("oracle", {}).get("ndcg@5")
    print(f"\n{'method':18s} {'ndcg@5':>7s} {'share of oracle':>15s} {'time s':>7s}")
    for method, values in methods.items():
        share = values["ndcg@5"] / oracle if oracle else float("nan")
        if method == "network":
            seconds = timings.get("search_s", 0.0) + timings.get("train_network_s", 0.0)
        else:
            seconds = timings.get(f"{method}_s", float("nan"))
        print(f"{method:18s} {values['ndcg@5']:7.4f} {share:15.3f} {seconds:7.1f}")
    net = methods["network"]["ndcg@5"]
    peers = {m: v["ndcg@5"] for m, v in methods.items() if m not in ("network", "oracle")}
    best = max(peers, key=peers.get) if peers else None
    if best is not None:
        verdict = "above" if net > peers[best] else "NOT above"
        print(f"network is {verdict} every baseline (best peer {best} {peers[best]:.4f})")
    if target is not None and oracle:
        share = net / oracle
        print(f"target share {target:.2f}: {'reached' if share >= target else 'NOT reached'} ({share:.3f})")


def print_card(card: dict) -> None:
    print("\ncard (network, test split): cap → mean shown, precision of shown, hit rate (≥1 shown resonated)")
    def fmt(value: float | None) -> str:
        return "  —  " if value is None else f"{value:.3f}"

    print(f"  (precision counts {card['precision_counts']})")
    for row in card["caps"]:
        cap = "none" if row["cap"] is None else f"{row['cap']:>4}"
        print(f"  cap {cap}: shown {row['shown']:.2f}  precision {fmt(row['precision'])}  hit {fmt(row['hit_rate'])}")
    print(f"  as configured (top_k {card['top_k']}, min_selected {card['min_selected']}): shown "
          f"{card['configured']['shown']:.2f}, precision {fmt(card['configured']['precision'])}")  # fmt: skip


def timed_fit(args: argparse.Namespace, root: Path) -> None:
    """`python -m training.fit` as a child process on the bundled firm: wall time and peak RSS."""
    from needs_rec.dictionaries import load
    from training import sample

    crm = sample.write(sample.generate(load(REPO / "dictionaries"), n_orgs=args.fit_orgs, seed=args.seed),
                       root / "timed_crm", oracle=False)  # fmt: skip
    episodes = pd.read_csv(crm / "outcomes.csv", usecols=["contact_id", "occurred_on", "stage"]).drop_duplicates()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    extra = ["--no-baselines"] if args.timed_no_baselines else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "training.fit", "--data", str(crm), "--output", str(root / "timed_models"),
         "--seed", str(args.seed), "--quiet", *extra],
        check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = after.ru_maxrss / 1024**2
    label = " --no-baselines" if extra else " (with every default baseline)"
    print(f"python -m training.fit{label} on {len(episodes)} episodes ({args.fit_orgs} organizations), search "
          f"included: {wall:.1f} s wall, {cpu:.1f} s CPU (user + system; on 2 otherwise idle cores the wall time "
          f"is about CPU / 2 .. CPU), {peak:.2f} GiB peak RSS")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated; default all")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's organization count")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gbt", action="store_true", help="also the slow gradient-boosted-trees baseline")
    parser.add_argument("--network-only", action="store_true",
                        help="skip the baselines (the network against the oracle only; quick while iterating)")
    parser.add_argument("--timed-fit", action="store_true", help="time python -m training.fit as a child process")
    parser.add_argument("--timed-no-baselines", action="store_true", help="time the fit with --no-baselines")
    parser.add_argument("--fit-orgs", type=int, default=7300, help="organizations of the timed fit (≈8.2 episodes/org)")
    args = parser.parse_args()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    np.seterr(all="ignore")
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        if args.timed_fit:
            timed_fit(args, root)
        for name in names:
            run_scenario(name, SCENARIOS[name], args, root)


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    main()
