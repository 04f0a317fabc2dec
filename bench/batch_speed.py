"""Speed of `python -m serving.batch`: N requests scored and written (Parquet by default).

    .venv/bin/python bench/batch_speed.py [--requests 1000000] [--contacts 200000] [--model M] [--top-k N]

Makes a synthetic CRM (organizations and contacts with codes from the repo's dictionaries, in
Parquet) and N requests (random contact × stage, with request ids), builds a realistic version
(a 256→128 network) unless --model is given, then runs the real command as a subprocess and
prints its wall-clock time (interpreter and TensorFlow start-up included), the rows written and
the output size. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def make_crm(directory: Path, dictionaries: Path, n_orgs: int, n_contacts: int, seed: int = 0) -> None:
    """organizations.parquet and contacts.parquet with random codes (vectorised; no personal data)."""
    from needs_rec import dictionaries as dicts_mod

    d = dicts_mod.load(dictionaries)
    rng = np.random.default_rng(seed)

    def pick(vocabulary: str, n: int) -> np.ndarray:
        codes = np.array(d.codes(vocabulary), dtype=object)
        return codes[rng.integers(0, len(codes), n)]

    def multi(codes: list[str], n: int, p: float) -> np.ndarray:
        chosen = rng.random((n, len(codes))) < p
        return np.array([";".join(np.array(codes)[row]) for row in chosen], dtype=object)

    directory.mkdir(parents=True, exist_ok=True)
    org_ids = np.array([f"o{i}" for i in range(n_orgs)], dtype=object)
    years = rng.integers(2012, 2024, n_orgs)
    pd.DataFrame(
        {
            "org_id": org_ids,
            "industry": pick("industries", n_orgs),
            "region": pick("regions", n_orgs),
            "employees": rng.integers(1, 20000, n_orgs).astype(float),
            "revenue_mln": np.round(rng.gamma(2.0, 80.0, n_orgs), 1),
            "legal_form": pick("legal_forms", n_orgs),
            "founded_year": rng.integers(1991, 2023, n_orgs).astype(float),
            "client_since": np.where(rng.random(n_orgs) < 0.5, [f"{y}-03-01" for y in years], ""),
            "products_owned": multi(d.codes("products"), n_orgs, 0.15),
        }
    ).to_parquet(directory / "organizations.parquet", index=False)
    pd.DataFrame(
        {
            "contact_id": np.array([f"c{i}" for i in range(n_contacts)], dtype=object),
            "org_id": org_ids[rng.integers(0, n_orgs, n_contacts)],
            "position": pick("positions", n_contacts),
            "department": pick("departments", n_contacts),
            "decision_role": pick("decision_roles", n_contacts),
            "interests": multi([n.code for n in d.needs], n_contacts, 0.05),
        }
    ).to_parquet(directory / "contacts.parquet", index=False)


def make_requests(path: Path, dictionaries: Path, n: int, n_contacts: int, seed: int = 1) -> None:
    from needs_rec import dictionaries as dicts_mod

    stages = np.array(dicts_mod.load(dictionaries).stage_codes, dtype=object)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "request_id": np.char.add("r", np.arange(n).astype(str)).astype(object),
            "contact_id": np.char.add("c", rng.integers(0, n_contacts, n).astype(str)).astype(object),
            "stage": stages[rng.integers(0, len(stages), n)],
        }
    )
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--orgs", type=int, default=50_000)
    parser.add_argument("--model", type=Path, help="models directory or version (default: build one)")
    parser.add_argument("--dictionaries", type=Path, default=REPO / "dictionaries")
    parser.add_argument("--top-k", type=int, default=None, help="pass --top-k N to the command")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="output format")
    parser.add_argument("--requests-format", choices=["parquet", "csv"], default="csv")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        started = time.perf_counter()
        if args.model is None:
            from model_factory import build_version

            model = build_version(work / "models", args.dictionaries, hidden=(256, 128), n_rows=2000).parent
        else:
            model = args.model
        make_crm(work / "crm", args.dictionaries, args.orgs, args.contacts)
        requests = work / f"requests.{args.requests_format}"
        make_requests(requests, args.dictionaries, args.requests, args.contacts)
        print(f"prepared in {time.perf_counter() - started:.1f} s: {args.orgs:,} organizations, "
              f"{args.contacts:,} contacts, {args.requests:,} requests ({requests.suffix[1:]})")

        output = work / f"scores.{args.format}"
        command = [sys.executable, "-m", "serving.batch", "--model", str(model), "--data", str(work / "crm"),
                   "--requests", str(requests), "--output", str(output)]
        if args.top_k:
            command += ["--top-k", str(args.top_k)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stderr[-2000:])
            return result.returncode
        summary = [line for line in result.stderr.splitlines() if line.startswith("scored")]
        print(f"python -m serving.batch: {wall:.1f} s wall clock (interpreter + TensorFlow start included)")
        print(f"  {summary[-1] if summary else ''}")
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(output).metadata.num_rows if args.format == "parquet" else None
        size = output.stat().st_size / 1e6
        print(f"  output: {output.name}, {size:,.0f} MB" + (f", {rows:,} rows" if rows is not None else ""))
        print(f"  throughput: {args.requests / wall:,.0f} requests/s end to end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    sys.exit(main())
