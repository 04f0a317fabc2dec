"""`python -m serving.audience`: a campaign list — the contacts to call about one characteristic at one stage.

    python -m serving.audience --model M --data D --characteristic C --stage S [--limit N] --output O
        [--industry CODE] [--region CODE] [--clients only|exclude] [--exclude-presented-days N]

Reads D's organizations, contacts and outcomes (validated against the served version's own
dictionaries), scores every contact at S as of today with the version's SavedModel, ranks them with
`needs_rec.audience.rank` — the same rule as `GET /v1/audience` (owners of C's product left out
before the last stage, the filters, ties to the smaller contact_id) — and writes contact_id,
org_id, probability, rank (1 = best) to O (CSV or Parquet by its extension), through a temporary
file renamed into place. Bad input (unknown characteristic or stage, a characteristic not offered at
S, a bad flag value, data errors) exits 2 with one line, before any model is loaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from needs_rec import durable
from needs_rec.errors import ConfigError, NeedsRecError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from needs_rec.cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m serving.audience",
        description="Rank the CRM's contacts by the probability that a characteristic resonates at a stage.",
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="models directory (its stable version from labels.json, else the newest) or one version")
    parser.add_argument("--data", required=True, help="CRM: a directory of CSV/Parquet tables or a database URL")
    parser.add_argument("--characteristic", required=True, help="characteristic code (characteristics.yaml)")
    parser.add_argument("--stage", required=True, help="funnel stage code (funnel_stages.yaml)")
    parser.add_argument("--limit", type=int, default=None, help="keep the best N contacts (default: all)")
    parser.add_argument("--output", type=Path, required=True, help="output file, .csv or .parquet")
    parser.add_argument("--industry", default=None, help="only organizations of this industry code")
    parser.add_argument("--region", default=None, help="only organizations of this region code")
    parser.add_argument("--clients", choices=("only", "exclude"), default=None,
                        help="only clients (client_since set) or only prospects")
    parser.add_argument("--exclude-presented-days", type=int, default=None, metavar="N",
                        help="leave out contacts the characteristic was presented to in the last N days")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import crm as crm_source
    from needs_rec import audience, dictionaries, schema
    from serving.batch import _check_output, resolve_version

    suffix = _check_output(args.output, [("--data", args.data)])
    started = time.perf_counter()
    filters = _filters(args)
    version_dir = resolve_version(args.model)
    dicts = dictionaries.load(version_dir / "dictionaries")
    with crm_source.open_source(args.data) as source:
        crm, report = schema.validate(source.read_crm(), dicts)
        described = source.describe()
    population = audience.Population.from_crm(crm, dicts)
    today = dt.datetime.now(dt.UTC).date()
    # The rule's checks (codes, offer, limit) run on an all-zero column first: bad input costs no model load.
    audience.rank(population, _zeros(len(population)), args.characteristic, args.stage, filters=filters,
                  limit=args.limit, today=today)

    from serving.registry import load_version

    model = load_version(version_dir)
    # Warnings only once the run goes ahead: an error above is then the run's one line.
    if report.warnings_count:
        print(f"warning: {report.warnings_count} data warning(s) in {described}; "
              "run `python -m training.validate` for details", file=sys.stderr)
    for warning in audience.filter_warnings(filters, dicts):
        for field, flag in (("field 'industry'", "--industry"), ("field 'region'", "--region")):
            warning = warning.replace(field, flag)
        print(f"warning: {warning}", file=sys.stderr)
    stage = population.stage_codes[population.stage_index(args.stage)]
    probabilities = audience.score_stage(model.loaded.predict, population, crm, stage, today)
    ranked = audience.rank(population, probabilities, args.characteristic, stage, filters=filters,
                           limit=args.limit, today=today)
    write_frame(ranked.to_frame(population), args.output, suffix)
    seconds = time.perf_counter() - started
    print(f"ranked {ranked.total:,} eligible contact(s) of {len(population):,} with model version {model.version}; "
          f"{len(ranked.rows):,} written to {args.output} in {seconds:.1f} s", file=sys.stderr)
    return 0


def _filters(args: argparse.Namespace):
    from needs_rec.audience import Filters

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a whole number >= 1, got {args.limit}")
    try:
        return Filters(industry=args.industry, region=args.region, clients=args.clients,
                       exclude_presented_days=args.exclude_presented_days)
    except NeedsRecError as exc:
        raise ConfigError(str(exc).replace("field 'exclude_presented_days'", "--exclude-presented-days")) from exc


def _zeros(n: int):
    import numpy as np

    return np.zeros(n, dtype=np.float32)


def write_frame(frame, path: Path, suffix: str) -> None:
    """Write CSV or Parquet to a temporary file beside `path`, then rename it into place."""
    tmp = durable.temporary_beside(path)
    try:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        durable.publish(tmp, path)  # mkstemp's 0600 would hide the list from others
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    from needs_rec.cli import run_cli

    run_cli(main)
