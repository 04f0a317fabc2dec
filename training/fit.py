"""`python -m training.fit`: CRM export + dictionaries → a new, evaluated model version.

With no flags it trains on the sample CRM and dictionaries shipped in the repo and writes to
`models/`. This module only parses the flags and prints; the training job itself is
`training.train.train` (shared with `python -m training.retrain`).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from needs_rec.cli import ArgumentParser, seed_value
from training.train import DEFAULT_DATA, DEFAULT_DICTIONARIES, Progress, TrainResult, train

DEFAULT_OUTPUT = Path("models")

#: What `fit` returns (kept as a name for callers written before training became a function).
FitResult = TrainResult


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m training.fit",
        description="Train, evaluate and export a new needs_rec model version.",
    )
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="CRM: a directory of CSV/Parquet tables or a database URL"
    )
    parser.add_argument("--dictionaries", type=Path, default=DEFAULT_DICTIONARIES, help="reference dictionaries")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="models directory; a new version is added")
    parser.add_argument("--config", type=Path, default=None, help="YAML overriding needs_rec/default_config.yaml")
    parser.add_argument("--cutoff", type=_date, default=None, help="train on episodes before YYYY-MM-DD (default: all)")
    parser.add_argument("--seed", type=seed_value, default=None, help="random seed (default: the config's)")
    parser.add_argument(
        "--gbt", action="store_true", help="also run the gradient-boosted-trees baseline (slow, strongest peer)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip all baselines (faster, no comparison)")
    parser.add_argument(
        "--no-search", action="store_true", help="train the config as given, without the per-firm configuration search"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser.parse_args(argv)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--cutoff must be a date YYYY-MM-DD, got {text!r}") from exc


def fit(args: argparse.Namespace, oracle: Any = None) -> TrainResult:
    """Run `training.train.train` with the parsed flags; raises NeedsRecError subclasses for bad input."""
    return train(
        args.data,
        args.dictionaries,
        args.output,
        config=args.config,
        cutoff=args.cutoff,
        seed=args.seed,
        baselines=not args.no_baselines,
        gbt=args.gbt,
        search=not args.no_search,
        progress=Progress(quiet=args.quiet),
        oracle=oracle,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = fit(args)
    print(result.table)
    for warning in result.manifest.get("warnings", []):
        print(f"warning: {warning}")
    print(f"\nmodel version {result.version} written to {result.version_dir}")
    print(example_talking_points(result.version_dir, args))
    return 0


def example_talking_points(version_dir: Path, args: argparse.Namespace) -> str:
    """Talking points for one example contact, scored by the exported model (what a manager would see)."""
    from training.example import render_example

    return render_example(version_dir, args.data, args.dictionaries)


if __name__ == "__main__":
    from needs_rec.cli import run_cli

    run_cli(main)
