"""`write`: a sample's files (contract §2 CSVs, oracle.parquet, README.md), all or none."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from needs_rec import durable
from needs_rec.errors import ConfigError
from needs_rec.schema import CONTACTS, ORGANIZATIONS, OUTCOMES
from training.sample.generator import SampleData
from training.sample.process import END, GENERATOR_VERSION, ORACLE_FILE, README_FILE, START


def write(sample: SampleData, directory: str | Path, *, oracle: bool = True) -> Path:
    """Write `sample` into `directory` atomically: built beside it, then renamed into place.

    Refuses (ConfigError) when `directory` exists and is not an empty directory; a failure leaves
    nothing behind. `oracle=False` leaves out oracle.parquet (the bundled sample does, for size).
    """
    target = Path(directory)
    _check_output(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        _write_csv(sample.organizations, staging / f"{ORGANIZATIONS.name}.csv")
        _write_csv(sample.contacts, staging / f"{CONTACTS.name}.csv")
        _write_csv(sample.outcomes, staging / f"{OUTCOMES.name}.csv")
        if oracle:
            table = pa.Table.from_pandas(sample.oracle, preserve_index=False).replace_schema_metadata(None)
            pq.write_table(table, staging / ORACLE_FILE, compression="zstd")
        (staging / README_FILE).write_text(_readme(sample, oracle), encoding="utf-8")
        staging.chmod(0o755)
        _check_output(target)
        if target.is_dir():
            target.rmdir()  # empty (checked just above)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target




# ---- files ------------------------------------------------------------------------------------------
def _check_output(target: Path) -> None:
    durable.check_directory_path(target, "--output")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"--output {str(target)!r}: already exists and is not an empty directory; "
            "give a new directory (nothing is overwritten)"
        )


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 CSV, `\\n` line ends, quotes only where a value needs them; identical bytes for identical frames."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    try:
        with path.open("wb") as sink:
            sink.write((",".join(frame.columns) + "\n").encode("utf-8"))
            pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:  # a value holds a comma, quote or newline: let the csv module quote it
        frame.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")


def _readme(sample: SampleData, oracle: bool) -> str:
    s = sample.stats
    files = "organizations.csv, contacts.csv, outcomes.csv (data contract §2)"
    if oracle:
        files += (
            " and oracle.parquet (one row per episode: contact_id, occurred_on, stage, then per "
            "characteristic the true probability that it is positive in the episode's label given the "
            "model-visible fields: the best score any model can reach)"
        )
    else:
        files += "; oracle.parquet left out (--no-oracle): rerun the command without it to get it"
    return (
        "# Synthetic CRM sample\n\n"
        "Synthetic data: every organization, person, name, INN, e-mail and phone number here is generated; "
        "none belongs to a real client.\n\n"
        f"- made by: `python -m training.sample --orgs {sample.n_orgs} --seed {sample.seed}"
        f"{'' if sample.shape.name == 'bundled' else ' --shape ' + sample.shape.name}"
        f"{'' if oracle else ' --no-oracle'}` "
        f"(generator version {GENERATOR_VERSION}); the process is described in docs/sample-generator.md\n"
        f"- seed: {sample.seed}\n"
        f"- orgs: {sample.n_orgs}\n"
        f"- dictionaries: sha256 {_dictionaries_digest(sample.checksums)}\n"
        f"- contacts: {s['contacts']}, episodes: {s['episodes']}, outcome rows: {s['outcome_rows']}\n"
        f"- positives per episode: {s['positives_per_episode']:.2f}, episodes per org: {s['episodes_per_org']:.2f}\n"
        f"- dates: {START} .. {END}\n\n"
        f"Files: {files}.\n"
    )


def _dictionaries_digest(checksums: Mapping[str, str]) -> str:
    """One SHA-256 over the per-file checksums: changes when any dictionary file changes."""
    text = "".join(f"{name}:{digest}\n" for name, digest in sorted(checksums.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
