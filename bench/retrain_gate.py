"""The retrain gate on broken and on shifted data: does it keep the champion, and does it promote a real change?

    .venv/bin/python bench/retrain_gate.py [--orgs 1500] [--seed 5] [--config C] [--positive-only]

Generates a synthetic CRM (`training.sample`), then with `python -m training.retrain` (a child
process each time, exit codes as an operator sees them):
1. the champion: retrain on the outcomes before T0 (the newest ~35% of outcome rows cut off) → the
   first version, `stable`;
2. broken data: all outcomes, the characteristic column shuffled across every row on/after T0
   (the challenger's training tail and the evaluation window alike) → expected exit 3, champion
   still `stable`;
3. a genuine shift: all outcomes, one rarely positive characteristic made to resonate in 25% of the
   episodes on/after T0 → expected exit 0, the challenger `stable`, and it ranks that
   characteristic higher on the window than the champion does.
Prints each decision line and the figures behind it; with --positive-only the negative rows are
dropped first (a CRM that records only what worked). Figures are printed, never asserted here;
tests/training/test_retrain.py runs the same scenarios small and asserts the decisions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from crm_drift import recent_start, shift_recent, shuffle_recent  # noqa: E402

SHIFT_SHARE = 0.25
RECENT_SHARE = 0.35


def retrain(crm: Path, models: Path, dictionaries: Path, config: Path | None, gate: Path | None,
            seed: int) -> tuple[int, str, dict[str, Any]]:
    """Run `python -m training.retrain` once: (exit code, its decision line, the promotions.jsonl record)."""
    argv = [sys.executable, "-m", "training.retrain", "--data", str(crm), "--dictionaries", str(dictionaries),
            "--models", str(models), "--seed", str(seed)]
    if config is not None:
        argv += ["--config", str(config)]
    if gate is not None:
        argv += ["--gate", str(gate)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    line = (done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or [""])[-1]
    records = (models / "promotions.jsonl").read_text(encoding="utf-8").splitlines()
    return done.returncode, line, json.loads(records[-1]) if records else {}


def write_crm(source: Path, target: Path, outcomes: pd.DataFrame) -> Path:
    """`source`'s organizations and contacts with `outcomes` as the outcomes table."""
    target.mkdir(parents=True)
    for name in ("organizations.csv", "contacts.csv"):
        shutil.copy2(source / name, target / name)
    outcomes.to_csv(target / "outcomes.csv", index=False)
    return target


def pick_rising(outcomes: pd.DataFrame, dictionaries: Path) -> tuple[str, list[str]]:
    """A characteristic offered at most stages that rarely resonates now (the one that will 'become popular')."""
    from needs_rec import dictionaries as dicts_mod

    dicts = dicts_mod.load(dictionaries)
    offered = dicts.offered()
    positives = outcomes[outcomes["outcome"] == "positive"]["characteristic"].value_counts()
    broad = [j for j in range(offered.shape[1]) if offered[:, j].sum() >= max(1, offered.shape[0] - 1)]
    codes = [dicts.characteristic_codes[j] for j in broad]
    counts = np.array([positives.get(code, 0) for code in codes])
    j = broad[int(np.argsort(counts)[len(counts) // 4])]  # rare, but not the rarest of all
    stages = [s for i, s in enumerate(dicts.stage_codes) if offered[i, j]]
    return dicts.characteristic_codes[j], stages


def rank_of(version: Path, crm: Path, characteristic: str, since: str, stages: list[str]) -> tuple[float, float]:
    """(mean probability, mean rank) of `characteristic` over the episodes on/after `since` at `stages`."""
    from crm import files as data_io
    from needs_rec import artifact, dictionaries, episodes, features, schema

    loaded = artifact.load(version)
    dicts = dictionaries.load(version / "dictionaries")
    data, _ = schema.validate(data_io.read_crm(crm), dicts)
    keys = data.outcomes[["contact_id", "occurred_on", "stage"]].drop_duplicates()
    keys = keys[(keys["occurred_on"].astype(str) >= since) & keys["stage"].isin(stages)].reset_index(drop=True)
    proba = loaded.predict(features.frame_to_inputs(episodes.model_inputs(keys, data)))
    j = loaded.vocabulary.index(characteristic)
    ranks = (proba > proba[:, [j]]).sum(axis=1) + 1
    return float(proba[:, j].mean()), float(ranks.mean())


def run_scenarios(work: Path, *, orgs: int, seed: int, dictionaries: Path, config: Path | None,
                  gate: Path | None = None, positive_only: bool = False,
                  shift_share: float = SHIFT_SHARE) -> dict[str, Any]:
    """The three retrains; returns their exit codes, lines, records and the shifted characteristic's ranks."""
    from needs_rec import dictionaries as dicts_mod
    from needs_rec import versions
    from training import sample

    crm = sample.write(sample.generate(dicts_mod.load(dictionaries), n_orgs=orgs, seed=seed), work / "crm",
                       oracle=False)
    outcomes = pd.read_csv(crm / "outcomes.csv", dtype=str, keep_default_na=False)
    if positive_only:
        outcomes = outcomes[outcomes["outcome"] == "positive"].reset_index(drop=True)
    since = recent_start(outcomes, RECENT_SHARE)
    rising, stages = pick_rising(outcomes[outcomes["occurred_on"] < since], dictionaries)
    models = work / "models"
    result: dict[str, Any] = {"since": since, "rising": rising}
    past = write_crm(crm, work / "past", outcomes[outcomes["occurred_on"] < since])
    result["champion"] = retrain(past, models, dictionaries, config, gate, seed)
    broken = write_crm(crm, work / "shuffled", shuffle_recent(outcomes, since, seed=seed))
    result["shuffled"] = retrain(broken, models, dictionaries, config, gate, seed)
    result["stable_after_shuffled"] = versions.read_labels(models)
    shifted = write_crm(crm, work / "shifted",
                        shift_recent(outcomes, rising, since, share=shift_share, seed=seed, stages=stages))
    result["shifted"] = retrain(shifted, models, dictionaries, config, gate, seed)
    labels = versions.read_labels(models)
    result["stable_after_shifted"] = labels
    window = result["shifted"][2].get("window", {}).get("start", since)
    champion = result["champion"][2].get("challenger")
    result["rank_champion"] = rank_of(models / str(champion), shifted, rising, window, stages)
    result["rank_stable"] = rank_of(models / str(labels.stable), shifted, rising, window, stages)
    challenger = result["shifted"][2].get("challenger")
    result["rank_challenger"] = rank_of(models / str(challenger), shifted, rising, window, stages) if challenger \
        else (float("nan"), float("nan"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--config", type=Path, default=None, help="training YAML (default: the project's)")
    parser.add_argument("--gate", type=Path, default=None, help="gate YAML (default: the project's)")
    parser.add_argument("--dictionaries", type=Path, default=REPO / "dictionaries")
    parser.add_argument("--positive-only", action="store_true", help="drop the negative outcome rows first")
    parser.add_argument("--shift-share", type=float, default=SHIFT_SHARE, help="recent episodes it resonates in")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="retrain-gate-"))
    started = time.perf_counter()
    try:
        r = run_scenarios(work, orgs=args.orgs, seed=args.seed, dictionaries=args.dictionaries, config=args.config,
                          gate=args.gate, positive_only=args.positive_only,
                          shift_share=args.shift_share)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kind = "positive-only outcomes" if args.positive_only else "explicit negatives"
    print(f"retrain gate, {args.orgs} organizations, seed {args.seed}, {kind}; drift from {r['since']}; "
          f"rising characteristic {r['rising']}")
    for name in ("champion", "shuffled", "shifted"):
        code, line, record = r[name]
        print(f"  {name:9s} exit {code}: {line}")
        metrics = record.get("metrics") or {}
        if metrics:
            figures = {k: (v or {}).get("ndcg@5") for k, v in metrics.items()}
            print(f"            window {record['window']['start']}..{record['window']['end']} "
                  f"({record['window']['positive_episodes']} episodes); ndcg@5 {figures}")
    print(f"  stable after shuffled: {r['stable_after_shuffled']}; after shifted: {r['stable_after_shifted']}")
    (p0, k0), (p1, k1) = r["rank_champion"], r["rank_stable"]
    challenger = r["shifted"][2].get("challenger")
    print(f"  challenger {challenger}'s view of it: mean probability {r['rank_challenger'][0]:.3f}, "
          f"mean rank {r['rank_challenger'][1]:.1f}")
    print(f"  {r['rising']} on the shifted window: champion mean probability {p0:.3f}, mean rank {k0:.1f}; "
          f"new stable {p1:.3f}, mean rank {k1:.1f}")
    print(f"  total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    sys.exit(main())
