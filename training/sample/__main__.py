"""`python -m training.sample`: write a synthetic CRM into a new directory or a database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import crm
from crm.write import write_tables
from needs_rec.cli import ArgumentParser, run_cli, seed_value, whole_number
from needs_rec.dictionaries import load
from needs_rec.schema import CONTACTS, ORGANIZATIONS, OUTCOMES
from training.sample.generator import generate
from training.sample.output import _check_output, write
from training.sample.process import DEFAULT_DICTIONARIES, DEFAULT_ORGS, DEFAULT_SEED, MAX_ORGS, SHAPES


# ---- command line -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m training.sample",
        description="Write a synthetic CRM (contract §2 tables plus the true probabilities) into a new directory.",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="directory to create (must not exist or be empty), or a database URL (sqlite:///crm.db, "
        "postgresql+psycopg://…[?schema=NAME]) to create the three tables in",
    )
    parser.add_argument(
        "--orgs", type=whole_number(1, MAX_ORGS), default=DEFAULT_ORGS, help=f"organizations (default {DEFAULT_ORGS})"
    )
    parser.add_argument("--seed", type=seed_value, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument(
        "--dictionaries", type=Path, default=DEFAULT_DICTIONARIES, help="dictionaries directory (default: the repo's)"
    )
    parser.add_argument("--no-oracle", action="store_true", help="leave out oracle.parquet (smaller output)")
    parser.add_argument(
        "--shape", choices=tuple(SHAPES), default="bundled", help="firm shape (docs/sample-generator.md)"
    )
    args = parser.parse_args(argv)
    to_database = crm.is_url(args.output)
    if not to_database:
        args.output = Path(args.output)
        _check_output(args.output)
    started = time.perf_counter()
    sample = generate(load(args.dictionaries), n_orgs=args.orgs, seed=args.seed, shape=args.shape)
    if to_database:  # the three CRM tables only; the oracle stays a file of directory samples
        frames = {t.name: getattr(sample, t.name) for t in (ORGANIZATIONS, CONTACTS, OUTCOMES)}
        where = write_tables(args.output, frames)
    else:
        write(sample, args.output, oracle=not args.no_oracle)
        where = str(args.output)
    s = sample.stats
    print(
        f"wrote {where}: {s['organizations']} organizations, {s['contacts']} contacts, "
        f"{s['episodes']} episodes, {s['outcome_rows']} outcome rows "
        f"({s['positives_per_episode']:.2f} positives per episode) in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        run_cli(main)
