"""SIGKILL a retrain at random moments: labels.json must always parse and name a version that loads.

    .venv/bin/python bench/retrain_kill.py [--trials 20] [--orgs 300] [--seed 3]

Generates a small synthetic CRM, runs `python -m training.retrain` once to completion (the
champion, and the time T one run takes; the gate lets every finished run promote, so labels.json
is rewritten each time), then `--trials` times starts a retrain and kills it with
SIGKILL after a random delay in [0, 1.1·T]. After every kill it checks, as an operator would:
labels.json parses and its `stable` version passes the manifest and file checks and loads with
TensorFlow; every numbered version passes the same checks (no half-written version is ever
numbered); the lock of the dead run does not block the next one. Finally one more retrain runs to
completion: it must not exit 2, and no `.building-*` leftover of the dead runs may remain after
it. Prints each trial and the totals; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

TINY_CONFIG = "network: {hidden_units: [16]}\ntraining: {max_epochs: 3, patience: 1}\n"
#: Every finished run promotes, so kills also land while labels.json is being replaced.
GATE = ("min_window_episodes: 1\nmin_ndcg_vs_champion: 0.0\nmax_stage_drop: 1.0\nmax_calibration_error: 1.0\n"
        "min_ndcg_vs_popularity: 0.0\n")


def command(crm: Path, models: Path, work: Path, seed: int) -> list[str]:
    """A retrain with its own `seed`: on the same data and seed a retrain has nothing new to learn and
    trains nothing, so each run gets another seed to really train and export."""
    return [sys.executable, "-m", "training.retrain", "--data", str(crm), "--models", str(models),
            "--config", str(work / "tiny.yaml"), "--gate", str(work / "gate.yaml"), "--seed", str(seed)]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def check(models: Path) -> tuple[bool, bool, str]:
    """(labels valid and stable loads, every numbered version verifies, a note)."""
    from needs_rec import artifact, versions
    from needs_rec.errors import ModelError

    try:
        labels = versions.read_labels(models)
        if labels is None:
            return False, True, "no labels.json"
        artifact.load(models / str(labels.stable))
        labels_ok = True
    except ModelError as exc:
        return False, True, f"stable broken: {exc}"
    bad = []
    for number in versions.list_versions(models):
        try:
            versions.verify_version(models / str(number))
        except ModelError as exc:
            bad.append(f"{number}: {exc}")
    return labels_ok, not bad, "; ".join(bad) or f"stable {labels.stable}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--orgs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    from needs_rec import dictionaries
    from training import sample

    work = Path(tempfile.mkdtemp(prefix="retrain-kill-"))
    rng = random.Random(args.seed)
    try:
        (work / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
        (work / "gate.yaml").write_text(GATE, encoding="utf-8")
        crm = sample.write(sample.generate(dictionaries.load(REPO / "dictionaries"), n_orgs=args.orgs,
                                           seed=args.seed), work / "crm", oracle=False)
        models = work / "models"
        started = time.monotonic()
        first = subprocess.run(command(crm, models, work, 1), env=environment(), cwd=REPO, capture_output=True,
                               text=True)
        full = time.monotonic() - started
        print(f"first retrain: exit {first.returncode} in {full:.1f} s: {first.stdout.strip()[:160]}")
        labels_ok = versions_ok = 0
        leftovers_seen = 0
        for trial in range(1, args.trials + 1):
            delay = rng.uniform(0.0, 1.1 * full)
            process = subprocess.Popen(command(crm, models, work, trial + 1), env=environment(), cwd=REPO,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            time.sleep(delay)
            finished = process.poll() is not None
            if not finished:
                os.killpg(process.pid, signal.SIGKILL)
            _, err = process.communicate()
            building = sorted(p.name for p in models.iterdir() if p.name.startswith(".building-"))
            leftovers_seen = max(leftovers_seen, len(building))
            good_labels, good_versions, note = check(models)
            labels_ok += good_labels
            versions_ok += good_versions
            what = f"finished (exit {process.returncode})" if finished else "killed"
            busy = " LOCK STUCK" if b"another retrain is running" in err else ""
            print(f"  trial {trial:2d}: {what} at {delay:5.1f} s; labels {'ok' if good_labels else 'BROKEN'}, "
                  f"versions {'ok' if good_versions else 'BROKEN'} ({note}); {len(building)} .building-* "
                  f"left{busy}")
        final = subprocess.run(command(crm, models, work, args.trials + 2), env=environment(), cwd=REPO,
                               capture_output=True, text=True)
        building = [p.name for p in models.iterdir() if p.name.startswith(".building-")]
        print(f"final retrain: exit {final.returncode}: {(final.stdout or final.stderr).strip()[:200]}")
        print(f"SIGKILL trials: {args.trials}; labels.json parsed and stable loaded after {labels_ok}/{args.trials}; "
              f"every numbered version verified after {versions_ok}/{args.trials}; most .building-* leftovers "
              f"at once {leftovers_seen}, after the final run {len(building)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    sys.exit(main())
