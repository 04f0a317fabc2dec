"""Data-path speed: read + validate + build_episodes + time_split on a large synthetic CRM.

    python bench/data_speed.py                        # 100k contacts, 1M outcome rows: CSV, Parquet, SQLite
    python bench/data_speed.py --postgres postgresql+psycopg://user@127.0.0.1:5432/db   # … and PostgreSQL
    python bench/data_speed.py --contacts 20000 --outcomes 200000 --keep out/bench_crm
    python bench/data_speed.py --repeat 3 --postgres URL   # each format measured 3 times, medians

The same tables are also written into a SQLite file and (with --postgres URL, or
NEEDS_REC_TEST_POSTGRES_URL set) into a fresh schema on that PostgreSQL server, dropped afterwards,
and read back through `crm.open_source` — the database columns of the issue-9 target (a 1M-row
outcomes table within 3× the Parquet read time). That figure is `read_outcomes_s`: the outcomes
table read again on the source `read_crm` just read (SQLite's reader process is running by then);
`read_outcomes_fresh_s` is the first read of a new source, its start included.

Generates the CRM with `training.sample.generate` (outcome rows subsampled to --outcomes, in file
order; contacts kept whole), or with a small vectorised generator of its own when training.sample
is unavailable (--own-generator forces it). Writes it as CSV and as Parquet into a temporary
directory, then measures each format in a fresh subprocess, so the peak RSS (VmHWM) is the data
path's own (imports included). Prints figures; asserts nothing. Target (2 cores): ≤ 10 s and ≤ 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("organizations", "contacts", "outcomes")
CONTACTS_PER_ORG = 2.6  # what training.sample produces on the repo's dictionaries


def generate(dictionaries_dir: Path, n_contacts: int, n_outcomes: int, seed: int, own: bool) -> dict[str, pd.DataFrame]:
    from needs_rec import dictionaries

    dicts = dictionaries.load(dictionaries_dir)
    if not own:
        try:
            from training import sample
        except ImportError:
            own = True
    if own:
        return _own_generator(dicts, n_contacts, n_outcomes, seed)
    data = sample.generate(dicts, n_orgs=max(1, math.ceil(n_contacts / CONTACTS_PER_ORG)), seed=seed)
    frames = {"organizations": data.organizations, "contacts": data.contacts, "outcomes": data.outcomes}
    outcomes = frames["outcomes"]
    if len(outcomes) > n_outcomes:
        keep = np.sort(np.random.default_rng(seed).choice(len(outcomes), n_outcomes, replace=False))
        frames["outcomes"] = outcomes.iloc[keep].reset_index(drop=True)
    return frames


def _own_generator(dicts, n_contacts: int, n_outcomes: int, seed: int) -> dict[str, pd.DataFrame]:
    """Uniformly random codes: enough for timing, not for learning."""
    rng = np.random.default_rng(seed)
    n_orgs = max(1, int(n_contacts / CONTACTS_PER_ORG))

    def pick(vocabulary: str, n: int) -> np.ndarray:
        codes = np.array(dicts.codes(vocabulary), dtype=object)
        return codes[rng.integers(0, len(codes), n)]

    org_ids = np.char.add("O-", np.arange(n_orgs).astype(str)).astype(object)
    days = np.datetime64("2020-01-01") + rng.integers(0, 2000, n_outcomes).astype("timedelta64[D]")
    organizations = pd.DataFrame(
        {
            "org_id": org_ids,
            "industry": pick("industries", n_orgs),
            "region": pick("regions", n_orgs),
            "employees": rng.integers(1, 5000, n_orgs).astype(str),
            "revenue_mln": np.round(rng.gamma(2.0, 50.0, n_orgs), 1).astype(str),
            "legal_form": pick("legal_forms", n_orgs),
            "founded_year": rng.integers(1990, 2024, n_orgs).astype(str),
            "client_since": np.where(rng.random(n_orgs) < 0.5, "2019-06-01", ""),
            "products_owned": pick("products", n_orgs),
            "inn": rng.integers(10**9, 10**10, n_orgs).astype(str),
        }
    )
    contact_ids = np.char.add("C-", np.arange(n_contacts).astype(str)).astype(object)
    contacts = pd.DataFrame(
        {
            "contact_id": contact_ids,
            "org_id": org_ids[rng.integers(0, n_orgs, n_contacts)],
            "position": pick("positions", n_contacts),
            "department": pick("departments", n_contacts),
            "decision_role": pick("decision_roles", n_contacts),
            "interests": pick("needs", n_contacts) + ";" + pick("needs", n_contacts),
            "full_name": "Иван Иванов",
            "email": "x@example.ru",
        }
    )
    outcomes = pd.DataFrame(
        {
            "contact_id": contact_ids[rng.integers(0, n_contacts, n_outcomes)],
            "occurred_on": np.datetime_as_string(np.sort(days), unit="D"),
            "stage": pick("funnel_stages", n_outcomes),
            "characteristic": pick("characteristics", n_outcomes),
            "outcome": np.where(rng.random(n_outcomes) < 0.3, "positive", "negative"),
        }
    )
    return {"organizations": organizations, "contacts": contacts, "outcomes": outcomes}


def write(frames: dict[str, pd.DataFrame], directory: Path, fmt: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    size = 0
    for name, df in frames.items():
        table = pa.Table.from_pandas(df.astype(str), preserve_index=False).replace_schema_metadata(None)
        path = directory / f"{name}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(table, path)
        else:
            pq.write_table(table, path)
        size += path.stat().st_size
    return size


def write_database(frames: dict[str, pd.DataFrame], url: str) -> None:
    from crm.write import write_tables

    write_tables(url, {name: df.astype(str) for name, df in frames.items()})


def measure(location: str, dictionaries_dir: Path) -> dict[str, float]:
    """Run the data path once in this process; return stage timings and the peak RSS."""
    import crm
    from crm import open_source
    from needs_rec import dictionaries, episodes, schema

    dicts = dictionaries.load(dictionaries_dir)
    timings: dict[str, float] = {}
    start = t = time.perf_counter()
    with crm.open_source(location) as source:
        frames = source.read_crm()
        timings["read_s"] = time.perf_counter() - t
        t = time.perf_counter()
        source.read_table("outcomes")
        # the 1M-row table alone, on the source read_crm used (extra, not in the total): the issue-9 figure
        timings["read_outcomes_s"] = time.perf_counter() - t
    start += timings["read_outcomes_s"]
    t = time.perf_counter()
    crm, report = schema.validate(frames, dicts)
    timings["validate_s"] = time.perf_counter() - t
    del frames
    t = time.perf_counter()
    eps = episodes.build_episodes(crm.outcomes, dicts.characteristic_codes)
    timings["build_episodes_s"] = time.perf_counter() - t
    t = time.perf_counter()
    episodes.time_split(eps.keys, validation_fraction=0.15, test_fraction=0.15, contacts=crm.contacts)
    timings["time_split_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start  # model_inputs below is extra, not in the total
    t = time.perf_counter()
    episodes.model_inputs(eps.keys, crm)
    timings["model_inputs_s"] = time.perf_counter() - t
    timings["peak_rss_mib"] = peak_rss_mib()
    t = time.perf_counter()
    with open_source(location) as fresh:  # a new source: SQLite starts its reader process here
        fresh.read_table("outcomes")
    timings["read_outcomes_fresh_s"] = time.perf_counter() - t  # extra, after the peak RSS was taken
    timings["outcome_rows"] = report.rows["outcomes"]
    timings["contacts"] = report.rows["contacts"]
    timings["episodes"] = len(eps)
    return timings


def peak_rss_mib() -> float:
    """This process's peak resident set size since it started (exec), in MiB.

    Linux: VmHWM of /proc/self/status (ru_maxrss would also count the pages a forked child shared
    with its parent before exec); elsewhere ru_maxrss.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dictionaries", type=Path, default=ROOT / "dictionaries")
    parser.add_argument("--own-generator", action="store_true", help="do not use training.sample")
    parser.add_argument("--keep", type=Path, help="write the data here (and keep it) instead of a temp dir")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("NEEDS_REC_TEST_POSTGRES_URL"),
        help="PostgreSQL server URL for the PostgreSQL column (a schema is created and dropped there)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure each format N times; print the medians")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.dictionaries)))
        return 0

    with tempfile.TemporaryDirectory(prefix="needs_rec_bench_") as tmp:
        base = args.keep or Path(tmp)
        t = time.perf_counter()
        frames = generate(args.dictionaries, args.contacts, args.outcomes, args.seed, args.own_generator)
        sizes = {fmt: write(frames, base / fmt, fmt) for fmt in ("csv", "parquet")}
        locations = {"csv": str(base / "csv"), "parquet": str(base / "parquet")}
        started = time.perf_counter()
        locations["sqlite"] = f"sqlite:///{base / 'crm.db'}"
        write_database(frames, locations["sqlite"])
        sizes["sqlite"] = (base / "crm.db").stat().st_size
        schema_name = None
        if args.postgres:
            schema_name = f"bench_{os.getpid()}"
            locations["postgresql"] = f"{args.postgres}?schema={schema_name}"
            write_database(frames, locations["postgresql"])
            sizes["postgresql"] = 0
        rows = {name: len(df) for name, df in frames.items()}
        del frames
        print(f"generated {rows} in {time.perf_counter() - t:.1f} s (databases written in "
              f"{time.perf_counter() - started:.1f} s)")
        figures_of: dict[str, dict[str, float]] = {}
        runs_of: dict[str, list[dict[str, float]]] = {}
        for _ in range(max(1, args.repeat)):  # interleaved, so a noisy minute spreads over every format
            for fmt, location in locations.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", location, "--dictionaries", str(args.dictionaries)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"{fmt}: failed\n{out.stderr.strip()}")
                    continue
                runs_of.setdefault(fmt, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
        for fmt, runs in runs_of.items():
            figures = figures_of[fmt] = {k: float(np.median([run[k] for run in runs])) for k in runs[0]}
            stages = ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in figures.items() if "_s" in k)
            disk = f"{sizes[fmt] / 2**20:.0f} MiB on disk" if sizes[fmt] else "server"
            print(
                f"{fmt:10s} ({disk}): total {figures['total_s']:.2f} s, "
                f"peak RSS {figures['peak_rss_mib']:.0f} MiB, {figures['episodes']:,.0f} episodes [{stages}]"
            )
        if schema_name:
            drop_schema(args.postgres, schema_name)
        if "parquet" in figures_of:
            median = "median of {} runs".format(len(runs_of["parquet"])) if len(runs_of["parquet"]) > 1 else "1 run"
            for key, what in (
                ("read_outcomes_s", "after read_crm on the same source (the figure)"),
                ("read_outcomes_fresh_s", "first read of a fresh source (SQLite: its reader process starts)"),
            ):
                base_s = figures_of["parquet"][key]
                ratios = ", ".join(
                    f"{fmt} {figures_of[fmt][key]:.2f} s = {figures_of[fmt][key] / base_s:.1f}×"
                    for fmt in figures_of
                    if fmt != "parquet"
                )
                each = "; ".join(
                    f"{fmt} " + "/".join(f"{run[key]:.2f}" for run in runs) for fmt, runs in runs_of.items()
                )
                print(f"outcomes table alone, {what}, {median}: parquet {base_s:.2f} s; {ratios} "
                      f"(target for the databases: ≤ 3×) [each run: {each}]")
    return 0


def drop_schema(url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    sys.exit(main())
