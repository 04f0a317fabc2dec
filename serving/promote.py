"""`python -m serving.promote --models M --version N` / `--rollback`: move the `stable` label (contract §7).

`--version N` makes N `stable` and the old `stable` `previous`; `--rollback` makes `previous`
`stable` again (and the rolled-back version `previous`, so a second rollback undoes the first).
The version must be present and pass the manifest and file checks (`needs_rec.versions`), else
nothing changes. labels.json is replaced atomically under a lock; a running service serves the
new `stable` within one poll, with no failed request. Each change is appended to
`M/promotions.jsonl` beside retrain's decisions, so the file is the whole history of what served.
Errors (no such version, nothing to roll back to, a broken manifest) exit 2 with one line.
TensorFlow is never imported: promotion is instant.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from needs_rec import durable, versions
from needs_rec.cli import ArgumentParser, run_cli
from needs_rec.errors import ConfigError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m serving.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="models directory (holds labels.json)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--version", type=int, help="make this version stable")
    action.add_argument("--rollback", action="store_true", help="make the previous version stable again")
    return parser.parse_args(argv)


def record(models: Path, action: str, labels: versions.Labels, **extra: object) -> dict:
    """Append one label change to promotions.jsonl and return it."""
    entry = {
        "at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "action": action,
        "stable": labels.stable,
        "previous": labels.previous,
        "by": f"serving.promote (pid {os.getpid()})",
        **extra,
    }
    durable.append_line(models / versions.PROMOTIONS, json.dumps(entry, ensure_ascii=False))
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models: Path = args.models
    if not models.is_dir():
        raise ConfigError(f"--models {str(models)!r}: no such models directory")
    versions.check_models_dir(models, "--models")
    versions.check_writable_dir(models, "--models")  # a read-only mount: one line naming it, not the lock's traceback
    if args.rollback:
        before = versions.read_labels(models)
        labels = versions.rollback(models)
        record(models, "rollback", labels, rolled_back=before.stable if before else None)
        print(f"rolled back: version {labels.stable} is stable again (previous: {labels.previous})")
    else:
        if args.version < 1:
            raise ConfigError(f"--version must be a version number >= 1, got {args.version}")
        before = versions.read_labels(models)
        labels = versions.promote(models, args.version)  # verifies the version either way
        previous = f" (previous: {labels.previous})" if labels.previous is not None else ""
        if before is not None and before == labels:  # no label moved: nothing to log, nothing to switch
            print(f"version {labels.stable} is already stable{previous}; nothing changed")
            return 0
        record(models, "promote", labels)
        print(f"version {labels.stable} is now stable{previous}")
    print("a running service switches within one poll; serving.batch uses it from now on", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
