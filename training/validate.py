"""`python -m training.validate --data D --dictionaries K`: check a CRM against the contract.

D is a directory of CSV/Parquet files or a database URL (`sqlite:///crm.db`,
`postgresql+psycopg://user:password@host/db[?schema=NAME]`); the report counts feedback rows that
needs_rec's own `feedback` table adds to the outcomes.

Prints the validation report (table sizes, episodes, date range, warnings) and exits 0 when the
data is clean or has warnings only, 2 with one `error: ...` line on errors. Writes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import crm
from needs_rec import dictionaries, schema
from needs_rec.cli import ArgumentParser, run_cli

DEFAULT_DICTIONARIES = Path(__file__).resolve().parents[1] / "dictionaries"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m training.validate",
        description="Validate a CRM (organizations, contacts, outcomes as CSV or Parquet files, or database tables) "
        "against the data contract and the reference dictionaries; print the report.",
    )
    parser.add_argument("--data", required=True, help="directory with the CRM tables, or a database URL")
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
    with crm.open_source(args.data) as source:
        _, report = schema.validate(source.read_crm(), dicts)
    print(report)
    return 0


if __name__ == "__main__":
    run_cli(main)
