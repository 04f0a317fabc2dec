"""`python -m serving.batch --model M --data D --requests R --output O [--top-k N]`: offline scoring (contract §3).

Reads the requests (`contact_id*`, `stage*`, optional `request_id`; CSV or Parquet), looks each
contact up in D's contacts and organizations (D: a directory or a database URL, read through
`crm.open_source`, validated by `needs_rec.schema.validate_contacts` against the served version's
own dictionaries, turned into raw model inputs by `needs_rec.episodes.model_inputs`), scores them in
large vectorised chunks with the version's SavedModel, and writes one row per (request,
characteristic): request_id (when the requests have it), contact_id, stage, characteristic,
probability, selected (passes the manifest's threshold cut and top_k cap, as
`needs_rec.thresholds.select`), rank (1 = most probable). Without `--top-k` every characteristic is
written for every request; with it, the N most probable.

Output is CSV or Parquet by O's extension, written to a temporary file beside O and renamed, so O
is either complete or untouched. Data problems exit 2 with one line: an unknown stage, an empty
contact_id or stage, or contact ids not in D's contacts (the first 5 are named) — an unknown
contact is an error rather than a silent skip, because a request that yields no rows is easy to miss.
Only organizations and contacts of D are used; D's outcomes (if any) are not read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from needs_rec import durable, versions
from needs_rec.errors import ConfigError, DataError, preview

CHUNK_ROWS = 65_536  # requests per model call and per written row group
OUTPUT_SUFFIXES = (".csv", ".parquet")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from needs_rec.cli import ArgumentParser  # usage errors as one line, as every command's

    parser = ArgumentParser(
        prog="python -m serving.batch",
        description="Score contacts at funnel stages offline with a needs_rec model version.",
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="models directory (its stable version from labels.json, else the newest) or one version")
    parser.add_argument(
        "--data", required=True, help="CRM with organizations and contacts: a directory or a database URL"
    )
    parser.add_argument("--requests", type=Path, required=True, help="CSV/Parquet: contact_id, stage[, request_id]")
    parser.add_argument("--output", type=Path, required=True, help="output file, .csv or .parquet")
    parser.add_argument("--top-k", type=int, default=None, help="write only the N most probable per request")
    return parser.parse_args(argv)


def _check_output(path: Path, inputs: Sequence[tuple[str, str | Path]] = ()) -> str:
    """The output's suffix, after refusing an unknown extension, a missing directory, and a path that
    is one of the command's `inputs` ((flag, location) pairs: a file, or a CRM directory whose table
    files are inputs too): the run would replace what it reads."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {str(path)!r}: unsupported extension {suffix or '(none)'!r}; use .csv or .parquet")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():  # found only at the final rename, after every contact was scored, and as a temp name
        raise ConfigError(f"--output {str(path)!r} is a directory; give a file name ending in .csv or .parquet")
    try:  # a probe, not os.access: root passes every mode check, an immutable or read-only mount does not
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise ConfigError(f"--output {str(path)!r}: cannot write in directory {str(path.parent)!r} "
                          f"({exc.strerror or type(exc).__name__})") from None
    from crm import is_url

    target = path.resolve()
    for flag, location in inputs:
        place = Path(str(location))
        if is_url(location) or not place.exists():
            continue  # a database URL: output files never go into it
        tables = [place / f"{name}{ext}" for name in _CRM_TABLES for ext in (".csv", ".parquet")
                  if place.is_dir()]
        if target in {p.resolve() for p in [place, *tables]}:
            raise ConfigError(f"--output {str(path)!r} is the {flag} input {str(place)!r}"
                              f"{' (one of its tables)' if tables else ''}; write the result to another file")
    return suffix


_CRM_TABLES = ("organizations", "contacts", "outcomes")


def load_contacts(data: str | Path, dicts: Any) -> tuple[Any, str | None]:
    """D's organizations and contacts, validated on their own (`schema.validate_contacts`), and the
    warning line to print once the run is known to go ahead (None: no warnings) — so a data error
    after it is still the run's only line. D's outcomes are not needed for scoring and not read."""
    import crm
    from needs_rec import schema

    with crm.open_source(data) as source:
        frames = {name: source.read_table(name) for name in (schema.ORGANIZATIONS.name, schema.CONTACTS.name)}
        described = source.describe()
    contacts, report = schema.validate_contacts(frames, dicts)
    warning = None
    if report.warnings_count:
        warning = (f"warning: {report.warnings_count} data warning(s) in {described} (unknown codes and missing "
                   "values are scored as unknown or missing); run `python -m training.validate` for details")
    return contacts, warning


def check_requests(requests: pd.DataFrame, stages: Sequence[str], source: str) -> pd.DataFrame:
    """Normalise the requests' contact_id and stage; DataError for empty values or unknown stages."""
    from needs_rec.dictionaries import normalize_code

    out = pd.DataFrame(index=requests.index)
    if "request_id" in requests.columns:
        out["request_id"] = requests["request_id"].astype("str").str.strip()
    out["contact_id"] = requests["contact_id"].astype("str").str.strip()
    codes, uniques = pd.factorize(requests["stage"].astype("str"))
    normalized = np.array([normalize_code(u) for u in uniques], dtype=object)
    out["stage"] = normalized[codes] if len(uniques) else np.array([], dtype=object)
    for column in ("contact_id", "stage"):
        empty = np.flatnonzero(out[column].to_numpy() == "")
        if len(empty):
            rows = preview([int(r) + 1 for r in empty])
            raise DataError(f"{source} column {column!r}: {len(empty)} empty value(s) in row(s) {rows}; "
                            f"every request needs a {column}")
    allowed = set(stages)
    unknown = [u for u in normalized if u not in allowed]
    if unknown:
        bad = np.flatnonzero(~out["stage"].isin(allowed).to_numpy())
        raise DataError(
            f"{source} column 'stage': unknown stage(s) {preview(sorted(set(unknown)))} in row(s) "
            f"{preview([int(r) + 1 for r in bad])}; allowed: {', '.join(stages)}"
        )
    return out.reset_index(drop=True)


def repeated_request_ids(requests: pd.DataFrame, source: str) -> str | None:
    """The warning line for request_ids that name more than one request (None: each names one or
    none is given): the output's rows for them cannot be told apart when joined back by request_id."""
    if "request_id" not in requests.columns:
        return None
    ids = requests["request_id"]
    repeated = ids[(ids != "") & ids.duplicated(keep=False)]
    if repeated.empty:
        return None
    rows = [int(r) + 1 for r in repeated.index]
    return (f"warning: {source} column 'request_id': {repeated.nunique()} value(s) repeated "
            f"({preview(sorted(set(repeated)))} in row(s) {preview(rows)}): each request is scored, but their "
            "output rows cannot be told apart by request_id")


def score_chunks(
    model: Any, frame: pd.DataFrame, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, probabilities) per chunk of the model-input frame."""
    from needs_rec.features import frame_to_inputs

    inputs = frame_to_inputs(frame)
    for start in range(0, len(frame), chunk_rows):
        part = slice(start, min(start + chunk_rows, len(frame)))
        yield part, model.predict({name: values[part] for name, values in inputs.items()})


@dataclass
class RequestColumns:
    """The requests' output columns, converted once: Arrow strings for ids, stage indices for stages."""

    request_ids: pa.Array | None
    contact_ids: pa.Array
    stage_ids: np.ndarray

    @classmethod
    def of(cls, requests: pd.DataFrame, stages: Sequence[str]) -> RequestColumns:
        index = {s: i for i, s in enumerate(stages)}
        has_ids = "request_id" in requests.columns
        return cls(
            request_ids=pa.array(requests["request_id"], pa.string()) if has_ids else None,
            contact_ids=pa.array(requests["contact_id"], pa.string()),
            stage_ids=requests["stage"].map(index).to_numpy(dtype=np.int32),
        )


def output_batch(
    requests: RequestColumns,
    part: slice,
    probabilities: np.ndarray,
    *,
    vocabulary: pa.Array,
    stages: pa.Array,
    thresholds: np.ndarray,
    cap: int | None,
    top_k: int | None,
    min_selected: int = 0,
    offer: np.ndarray | None = None,
) -> pa.RecordBatch:
    """One chunk of output rows, request by request, most probable first (dictionary-encoded strings)."""
    from needs_rec.thresholds import select

    n, c = probabilities.shape
    order = np.argsort(-probabilities, axis=1, kind="stable")  # stable: ties rank the lower index first
    k = c if top_k is None else min(top_k, c)
    order = order[:, :k]
    # the model's one selection rule, as HTTP applies it: cut, cap, floor, only what the stage offers
    offered = None if offer is None else offer[requests.stage_ids[part]]
    chosen = select(probabilities, thresholds, cap, min_selected, offered)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    length = part.stop - part.start
    columns: dict[str, pa.Array] = {}
    if requests.request_ids is not None:
        columns["request_id"] = pa.DictionaryArray.from_arrays(rows, requests.request_ids.slice(part.start, length))
    columns["contact_id"] = pa.DictionaryArray.from_arrays(rows, requests.contact_ids.slice(part.start, length))
    columns["stage"] = pa.DictionaryArray.from_arrays(np.repeat(requests.stage_ids[part], k), stages)
    columns["characteristic"] = pa.DictionaryArray.from_arrays(order.astype(np.int32).ravel(), vocabulary)
    columns["probability"] = pa.array(np.take_along_axis(probabilities, order, axis=1).ravel().astype(np.float32))
    columns["selected"] = pa.array(np.take_along_axis(chosen, order, axis=1).ravel())
    columns["rank"] = pa.array(np.tile(np.arange(1, k + 1, dtype=np.int16), n))
    return pa.RecordBatch.from_pydict(columns)


def main(argv: Sequence[str] | None = None) -> int:
    """Score every request and write the output atomically; returns 0 (errors raise and exit 2)."""
    args = parse_args(argv)
    suffix = _check_output(args.output, [("--requests", args.requests), ("--data", args.data)])
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer, got {args.top_k}")
    started = time.perf_counter()

    # Data checks first, with the version's own dictionaries and without TensorFlow: a data error
    # then costs no model load and prints exactly one line.
    from crm import files
    from needs_rec import dictionaries, episodes

    version_dir = resolve_version(args.model)
    dicts = dictionaries.load(version_dir / "dictionaries")
    raw_requests = files.read_requests(args.requests)
    source = raw_requests.attrs.get("source", args.requests.name)
    requests = check_requests(raw_requests, dicts.stage_codes, source)
    crm, warning = load_contacts(args.data, dicts)
    keys = requests[["contact_id", "stage"]].copy()
    keys["occurred_on"] = datetime.now(UTC).date().isoformat()  # scored as of today, like the HTTP service
    try:
        frame = episodes.model_inputs(keys, crm)  # DataError naming up to 5 unknown contact ids
    except DataError as exc:
        raise DataError(f"{source} column 'contact_id': {exc}") from exc

    from serving.registry import load_version

    model = load_version(version_dir)  # verifies SavedModel and dictionary checksums
    for line in (warning, repeated_request_ids(requests, source)):
        if line:
            print(line, file=sys.stderr)

    vocabulary = pa.array(model.vocabulary, pa.string())
    stages = pa.array(model.parser.stages, pa.string())
    columns = RequestColumns.of(requests, model.parser.stages)
    offer = np.stack([model.talking.offered(stage) for stage in model.parser.stages])
    options = {"thresholds": model.thresholds, "cap": model.top_k, "top_k": args.top_k,
               "min_selected": model.min_selected, "offer": offer}  # fmt: skip
    schema = _output_schema("request_id" in requests.columns, suffix)

    target = args.output
    tmp = durable.temporary_beside(target)
    written = 0
    try:
        writer = _writer(tmp, schema, suffix)

        def write(part: slice, probabilities: np.ndarray) -> int:
            batch = output_batch(columns, part, probabilities, vocabulary=vocabulary, stages=stages, **options)
            writer.write_batch(_decoded(batch) if suffix == ".csv" else batch)
            return batch.num_rows

        # Pipelined: the model scores chunk i+1 while another thread ranks and writes chunk i
        # (TensorFlow, NumPy's sort and Arrow's writer all release the GIL).
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="batch-writer") as pool:
                pending: Future[int] | None = None
                for part, probabilities in score_chunks(model.loaded, frame):
                    if pending is not None:
                        written += pending.result()
                    pending = pool.submit(write, part, probabilities)
                if pending is not None:
                    written += pending.result()
        finally:
            writer.close()
        durable.publish(tmp, target)  # the umask's modes, not mkstemp's 0600
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    print(
        f"scored {len(requests):,} request(s) with model version {model.version}: {written:,} row(s) "
        f"written to {target} in {seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def _writer(path: Path, schema: pa.Schema, suffix: str) -> Any:
    """A Parquet or CSV writer for the output schema.

    Parquet: plain strings for readers (no Arrow schema stored), dictionary pages for the text
    columns only and min/max statistics for the numeric ones only — computing string statistics
    over tens of millions of rows would cost more than the rest of the write.
    """
    if suffix == ".csv":
        return pacsv.CSVWriter(path, schema)
    text = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    numeric = [f.name for f in schema if not pa.types.is_dictionary(f.type)]
    return pq.ParquetWriter(
        path, schema, store_schema=False, use_dictionary=text, write_statistics=numeric, compression="snappy"
    )


def resolve_version(model: Path) -> Path:
    """`--model M`: one version directory, or the version a service on that models directory serves.

    That is `stable` (else the newest), and when it is missing or its files do not verify, the next
    in line the service falls back to (`previous`, or the next older: `versions.served_version`),
    said in one `warning:` line, so batch scores with what the endpoint answers with. TensorFlow-free,
    so data errors are still reported before any model is loaded; with no version that verifies,
    the first in line is returned and its load names what is wrong.
    """
    path = Path(model)
    if versions.is_version_dir(path):
        return path
    number = versions.served_version(path)
    if number is None:
        return versions.resolve_serving(path)  # its own error, or the first in line (whose load says why)
    labels = versions.read_labels(path)
    first = labels.stable if labels is not None else versions.list_versions(path)[-1]
    if number != first:
        which = "stable version" if labels is not None else "newest version"
        print(f"warning: the {which} {first} is missing or its files do not verify; scoring with version "
              f"{number}, the one the service falls back to", file=sys.stderr)
    return path / str(number)


def _output_schema(with_request_id: bool, suffix: str) -> pa.Schema:
    text = pa.dictionary(pa.int32(), pa.string()) if suffix == ".parquet" else pa.string()
    fields = [pa.field("request_id", text)] if with_request_id else []
    fields += [
        pa.field("contact_id", text),
        pa.field("stage", text),
        pa.field("characteristic", text),
        pa.field("probability", pa.float32()),
        pa.field("selected", pa.bool_()),
        pa.field("rank", pa.int16()),
    ]
    return pa.schema(fields)


def _decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Dictionary columns as plain strings (the CSV writer takes plain columns)."""
    arrays = [a.dictionary_decode() if pa.types.is_dictionary(a.type) else a for a in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


if __name__ == "__main__":
    from needs_rec.cli import run_cli

    run_cli(main)
