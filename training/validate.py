"""`python -m training.validate --data D --dictionaries K`: check a CRM export against the contract.

Prints the validation report (table sizes, episodes, date range, warnings) and exits 0 when the
data is clean or has warnings only, 2 with one `error: ...` line on errors. Writes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from needs_rec import dictionaries, schema
from training import data
from training._cli import run_cli

DEFAULT_DICTIONARIES = Path(__file__).resolve().parents[1] / "dictionaries"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.validate",
        description="Validate a CRM export (organizations, contacts, outcomes as CSV or Parquet) "
        "against the data contract and the reference dictionaries; print the report.",
    )
    parser.add_argument("--data", required=True, type=Path, help="directory with the CRM tables")
    parser.add_argument(
        "--dictionaries",
        type=Path,
        default=DEFAULT_DICTIONARIES,
        help="directory with the reference dictionaries (default: the repo's dictionaries/)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dicts = dictionaries.load(args.dictionaries)
    _, report = schema.validate(data.read_crm(args.data), dicts)
    print(report)
    return 0


if __name__ == "__main__":
    run_cli(main)
