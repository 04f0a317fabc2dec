"""Model versions on disk without TensorFlow: numbers, manifests, labels, locks (contract §3, §7).

Everything that decides *which* version is which lives here, so serving, batch scoring, training,
promotion and the pages all agree, and none of them needs TensorFlow to find out:

* A version is the directory `M/<n>/`, n a positive integer. Its name is its number; the manifest
  may repeat it but never overrides it (a copied directory is served under its own name).
* `Manifest` is the typed view of `M/<n>/manifest.json`, and this module is its one owner: it
  writes it (`write_manifest`, called by `needs_rec.artifact.export`) and reads it
  (`read_manifest`). The manifest carries `checksum`, the SHA-256 of its own canonical JSON, and
  `signature`, an HMAC-SHA256 over the same bytes when `NEEDS_REC_SIGNING_KEY` is set. A manifest
  edited by hand no longer matches and is refused; with the key set, an unsigned or wrongly
  signed manifest is refused too (the checksum alone catches accidents, the HMAC catches anyone
  without the key).
* `M/labels.json` maps `stable` and `previous` (and any other label an operator adds, kept as it
  is) to versions, as TensorFlow Serving's version labels do. It is written atomically (temporary
  file, fsync, rename) under a lock, so a reader always sees the old or the new mapping, never half
  of one. With labels, `stable` is what serves; a
  version that is not `stable` is a candidate and is never served. Without labels the newest
  version serves (v1 behaviour).
* Label changes and retraining hold `needs_rec.durable.exclusive_lock`; labels.json is written with
  `durable.atomic_write`, promotions.jsonl with `durable.append_line` (that module owns the file
  safety: atomic writes, locks, modes from the umask so a service account in the group can read).
* `clean_stale_builds` removes `.building-<pid>-*` directories whose builder is no longer running.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from needs_rec import durable
from needs_rec.errors import ConfigError, ModelError, clipped, shown

MANIFEST = "manifest.json"
SAVED_MODEL = "saved_model"
LABELS = "labels.json"
LABELS_LOCK = ".labels.lock"
RETRAIN_LOCK = ".retrain.lock"
PROMOTIONS = "promotions.jsonl"
BUILDING_PREFIX = ".building-"
SIGNING_KEY_ENV = "NEEDS_REC_SIGNING_KEY"
#: 2: the manifest carries its own `checksum` (and `signature` when signed); format 1 had neither.
MANIFEST_FORMAT = 2
#: Side files a version may carry beside the SavedModel (written through `artifact.export`'s
#: `write_extras`), checksummed in the manifest's `side_files` and verified with the SavedModel: the
#: organization index of `needs_rec.similar`.
SIDE_DIRS = ("organizations",)
LABEL_NAMES = ("stable", "previous")
#: What another label's name may be (`Labels.others`): a path segment of `/labels/<label>` as it is.
_LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: A `.building-*` directory without a process id in its name (an older export) counts as stale after this.
STALE_BUILD_AGE_S = 6 * 3600
_SEAL_KEYS = ("checksum", "signature")


# -- version numbers ---------------------------------------------------------------------------


def list_versions(models_dir: str | Path) -> list[int]:
    """Version numbers present under `models_dir`, ascending (hidden temporary builds and other entries excluded)."""
    models_dir = Path(models_dir)
    try:
        entries = list(models_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(p.name) for p in entries if p.name.isdigit() and int(p.name) > 0 and p.is_dir())


def version_number(version_dir: str | Path) -> int:
    """The number of a version directory: its name (ModelError when the name is not a positive integer)."""
    name = Path(version_dir).resolve().name
    if not name.isdigit() or int(name) < 1:
        raise ModelError(f"directory {name!r} is not a model version: a version's directory is named by its number")
    return int(name)


def is_version_dir(path: str | Path) -> bool:
    """True when `path` holds a manifest (one version), False for a models directory."""
    return (Path(path) / MANIFEST).is_file()


# -- the manifest ------------------------------------------------------------------------------


def signing_key() -> bytes | None:
    """The HMAC key from `NEEDS_REC_SIGNING_KEY` (None when unset or empty)."""
    value = os.environ.get(SIGNING_KEY_ENV, "")
    return value.encode("utf-8") if value else None


def canonical_bytes(data: Mapping[str, Any]) -> bytes:
    """The manifest's content as the checksum and the HMAC see it: sorted keys, no whitespace, seal keys left out."""
    body = {k: v for k, v in data.items() if k not in _SEAL_KEYS}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(data: Mapping[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """`data` with its `checksum` (and `signature` when `key` is given) set."""
    body = canonical_bytes(data)
    sealed = {k: v for k, v in data.items() if k not in _SEAL_KEYS}
    sealed["checksum"] = hashlib.sha256(body).hexdigest()
    if key is not None:
        sealed["signature"] = hmac.new(key, body, hashlib.sha256).hexdigest()
    return sealed


@dataclass(frozen=True)
class Manifest:
    """The typed manifest of one version (docs/ARCHITECTURE.md lists every key).

    The fields are what serving, batch scoring, promotion and the pages rely on; `data` is the
    whole JSON object for everything else (metrics, resonance, features, side files' entries).
    `version` is the number in the file; the number a version is known by is its directory's name.
    """

    version: int
    format: int
    created_at: str | None
    vocabulary: tuple[str, ...]
    stages: tuple[str, ...] | None
    thresholds: tuple[float, ...]
    top_k: int | None
    files: Mapping[str, str]
    dictionary_checksums: Mapping[str, str]
    signed: bool
    data: Mapping[str, Any] = field(repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        """Any manifest key, as in the JSON file (e.g. `metrics`, `resonance`, `data`)."""
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.data.get("metrics") or {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = MANIFEST) -> Manifest:
        """Check the keys serving relies on (type and shape) and build the typed view; ModelError naming the key."""

        def need(key: str, kind: type | tuple[type, ...]) -> Any:
            value = data.get(key)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                allowed = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
                raise ModelError(f"{where}: key {key!r} must be {allowed}, got {type(value).__name__}")
            return value

        vocabulary = need("vocabulary", list)
        thresholds = need("thresholds", list)
        if not all(isinstance(v, str) for v in vocabulary) or not vocabulary:
            raise ModelError(f"{where}: key 'vocabulary' must be a non-empty list of characteristic codes")
        if len(thresholds) != len(vocabulary) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) for t in thresholds
        ):
            raise ModelError(f"{where}: key 'thresholds' must hold one number per characteristic "
                             f"({len(vocabulary)}), got {len(thresholds)} value(s)")
        top_k = data.get("top_k")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ModelError(f"{where}: key 'top_k' must be an integer >= 1 or null, not {top_k!r}")
        stages = data.get("stages")
        if stages is not None and not (isinstance(stages, list) and all(isinstance(s, str) for s in stages)):
            raise ModelError(f"{where}: key 'stages' must be a list of stage codes")
        files = data.get("files")
        if not isinstance(files, dict) or not files:
            raise ModelError(f"{where}: key 'files' (checksums) is missing")
        checksums = (data.get("dictionaries") or {}).get("checksums") if isinstance(data.get("dictionaries"), dict) \
            else None
        return cls(
            version=int(data.get("version") or 0),
            format=int(data.get("format") or 0),
            created_at=data.get("created_at"),
            vocabulary=tuple(vocabulary),
            stages=tuple(stages) if stages is not None else None,
            thresholds=tuple(float(t) for t in thresholds),
            top_k=top_k,
            files=dict(files),
            dictionary_checksums=dict(checksums) if isinstance(checksums, dict) else {},
            signed="signature" in data,
            data=dict(data),
        )


def write_manifest(directory: str | Path, data: Mapping[str, Any]) -> Manifest:
    """Write `directory/manifest.json`, sealed (checksum, plus the HMAC when a signing key is set)."""
    full = {**data, "format": MANIFEST_FORMAT}
    sealed = seal(full, signing_key())
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(sealed, ensure_ascii=False, indent=2), encoding="utf-8")
    return Manifest.from_dict(sealed)


def read_manifest(version_dir: str | Path, *, key: bytes | bool | None = True) -> Manifest:
    """Read and check one version's manifest: parses, its checksum matches, its HMAC matches when a key is set.

    `key`: True (default) → `NEEDS_REC_SIGNING_KEY`; None/False → checksum only; bytes → that key.
    Messages name the version, not the server path (paths belong in the log, not in answers).
    """
    version_dir = Path(version_dir)
    name = f"version {version_dir.name}"
    path = version_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{name}: missing {MANIFEST}; not a model version") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{name}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{name}: {MANIFEST} must hold a JSON object")
    body = canonical_bytes(data)
    checksum = data.get("checksum")
    if not isinstance(checksum, str):
        raise ModelError(f"{name}: {MANIFEST} has no 'checksum' (exported before manifests were sealed, "
                         "or edited); export it again")
    if not hmac.compare_digest(checksum, hashlib.sha256(body).hexdigest()):
        raise ModelError(f"{name}: {MANIFEST} does not match its checksum (edited after export?); refused")
    secret = signing_key() if key is True else (key or None)
    if secret is not None:
        signature = data.get("signature")
        if not isinstance(signature, str):
            raise ModelError(f"{name}: {MANIFEST} is not signed, but {SIGNING_KEY_ENV} is set; refused")
        if not hmac.compare_digest(signature, hmac.new(secret, body, hashlib.sha256).hexdigest()):
            raise ModelError(f"{name}: {MANIFEST} signature does not match {SIGNING_KEY_ENV}; refused")
    return Manifest.from_dict(data, where=f"{name}: {MANIFEST}")


def file_checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory`, keyed by its POSIX path relative to it."""
    result = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        result[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return result


def side_checksums(version_dir: Path) -> dict[str, str]:
    """SHA-256 of the files under a version's `SIDE_DIRS`, keyed by their path relative to the version."""
    return {f"{name}/{path}": digest for name in SIDE_DIRS if (version_dir / name).is_dir()
            for path, digest in file_checksums(version_dir / name).items()}


def verify_version(version_dir: str | Path) -> Manifest:
    """The manifest checks of `read_manifest` plus every SavedModel file and side file against their checksums."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    actual = file_checksums(version_dir / SAVED_MODEL)
    expected = manifest.files
    bad = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    side = manifest.get("side_files")
    if isinstance(side, dict):  # versions exported before side files existed have none to check
        found = side_checksums(version_dir)
        bad += sorted(k for k in side.keys() | found.keys() if side.get(k) != found.get(k))
    if bad:
        raise ModelError(f"version {version_dir.name}: files do not match the manifest checksums: {', '.join(bad[:5])}")
    return manifest


# -- labels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """`M/labels.json`: which version is `stable` (served) and which was `previous` (the rollback target).

    `others` are any further labels an operator gives, as TensorFlow Serving allows any label name
    (its own example is `canary`): they are kept through promotions and rollbacks and answer on the
    labelled paths, but they decide nothing here — a version only serves as `stable` (or is held as
    `previous`), so a label naming a candidate addresses a version this service does not load.
    """

    stable: int
    previous: int | None = None
    others: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, int]:
        out = {"stable": self.stable}
        if self.previous is not None:
            out["previous"] = self.previous
        out.update(self.others)
        return out

    def get(self, label: str) -> int | None:
        """The version a label names (None for an unset or unknown label)."""
        return self.to_dict().get(label)

    def moved(self, stable: int, previous: int | None) -> Labels:
        """These labels with `stable` and `previous` moved and every other label kept."""
        return Labels(stable=stable, previous=previous, others=self.others)


def read_labels(models_dir: str | Path) -> Labels | None:
    """The labels of `models_dir`, None when it has no labels.json; ModelError naming the key when it is invalid."""
    path = Path(models_dir) / LABELS
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{LABELS} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{LABELS} must hold an object like {{\"stable\": 7, \"previous\": 6}}")
    bad_names = sorted(name for name in data if name not in LABEL_NAMES and not _LABEL_NAME.fullmatch(name))
    if bad_names:
        raise ModelError(f"{LABELS}: bad label name(s) {', '.join(repr(clipped(n, 40)) for n in bad_names[:5])}; "
                         "a label is 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    values: dict[str, int | None] = {}
    for label in (*LABEL_NAMES, *sorted(set(data) - set(LABEL_NAMES))):
        value = data.get(label)
        if value is None and label != "stable":
            values[label] = None
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f"{LABELS}: label {label!r} must be a version number >= 1, got {shown(value)}")
        values[label] = value
    if values["previous"] == values["stable"]:
        raise ModelError(f"{LABELS}: 'previous' names version {values['stable']}, the stable one; it must name "
                         "another version (the rollback target) or be left out")
    others = tuple((k, v) for k, v in values.items() if k not in LABEL_NAMES and v is not None)
    return Labels(stable=int(values["stable"]), previous=values["previous"], others=others)  # type: ignore[arg-type]


def write_labels(models_dir: str | Path, labels: Labels) -> None:
    """Replace labels.json atomically: a reader (or a crash) sees the old file or the new one, never a mix."""
    durable.atomic_write(Path(models_dir) / LABELS, json.dumps(labels.to_dict()) + "\n")


def serving_order(present: list[int], labels: Labels | None) -> list[int]:
    """Versions to serve, best first: [stable, previous] (those present) with labels, else all, newest first.

    A models directory with labels never serves a candidate (a version that is neither label);
    `previous` is the known-good fallback when `stable` cannot be loaded or has disappeared.
    """
    if labels is None:
        return sorted(present, reverse=True)
    return [v for v in (labels.stable, labels.previous) if v is not None and v in present]


def resolve_serving(models_dir: str | Path) -> Path:
    """`--model M`: one version directory as given, or the version a models directory serves now.

    With labels that is `stable` (ModelError when its directory is missing); without, the newest.
    """
    path = Path(models_dir)
    if is_version_dir(path):
        return path
    labels = read_labels(path)
    if labels is not None:
        target = path / str(labels.stable)
        if not target.is_dir():
            raise ModelError(f"label 'stable' names version {labels.stable}, which is not in the models directory")
        return target
    versions = list_versions(path)
    if not versions:
        if not path.exists():
            raise ModelError(f"no model version under {str(path)!r}: the path does not exist; expected a models "
                             "directory or a version in it")
        raise ModelError(
            f"no model version under {str(path)!r}; train one with `python -m training.fit --output {path}`"
        )
    return path / str(versions[-1])


def promote(models_dir: str | Path, version: int, *, replacing: int | None = None) -> Labels:
    """Make `version` stable; the version serving now (`served_version`) becomes previous.

    That is the old stable, unless its directory is gone or fails its checks: then the service was
    serving `previous` (or, without labels, the newest version that verifies), and that one stays
    the rollback target, so `previous` never names a version a rollback could not load.
    The version must be present and pass the manifest and file checks; nothing is changed otherwise.
    `replacing` (retrain): the stable version the decision was made against; if someone moved the
    label meanwhile, nothing is changed and ModelError says so.
    """
    models_dir = Path(models_dir)
    with durable.exclusive_lock(models_dir / LABELS_LOCK, "label change"):
        target = models_dir / str(version)
        if not target.is_dir():
            present = list_versions(models_dir)
            raise ModelError(f"--version {version}: no such version; present: {', '.join(map(str, present)) or 'none'}")
        verify_version(target)
        labels = read_labels(models_dir)
        if replacing is not None and (labels is None or labels.stable != replacing):
            now = labels.stable if labels is not None else None
            raise ModelError(f"stable was replaced while deciding (was version {replacing}, now {now}); "
                             "the labels were left as they are")
        if labels is not None and labels.stable == version:
            return labels  # already stable: nothing moves
        old = served_version(models_dir)
        new = (labels or Labels(stable=version)).moved(version, old if old != version else None)
        write_labels(models_dir, new)
        return new


def pin_stable(models_dir: str | Path, *, verified: int | None = None) -> int | None:
    """The version serving now, made explicit: `stable` if labelled, else the newest version that verifies
    becomes `stable` (None when there is none).

    Retraining pins before it exports a challenger, so the challenger (newer) is a candidate and is
    never served by the no-labels rule before the gate has decided. `verified`: a version the caller
    verified moments ago (`serving_stable`); still the newest, it is pinned without reading its files
    again, while a newer one that appeared meanwhile (a `training.fit` beside us) is verified and pinned.
    """
    models_dir = Path(models_dir)
    with durable.exclusive_lock(models_dir / LABELS_LOCK, "label change"):
        labels = read_labels(models_dir)
        if labels is not None:
            return labels.stable
        present = list_versions(models_dir)
        newest = present[-1] if present else None
        number = verified if verified is not None and newest == verified else newest_verified(models_dir)
        if number is not None:
            write_labels(models_dir, Labels(stable=number))
        return number


def serving_stable(models_dir: str | Path) -> int | None:
    """What `pin_stable` would answer, writing nothing: `stable` if labelled, else the newest version that
    verifies (None when there is none). For a caller that may still stop before it changes anything."""
    labels = read_labels(Path(models_dir))
    return labels.stable if labels is not None else newest_verified(models_dir)


def served_version(models_dir: str | Path) -> int | None:
    """The version a service on `models_dir` serves now: the first of `serving_order` whose files
    verify (`stable`, else `previous`; without labels the newest), or None."""
    models_dir = Path(models_dir)
    for number in serving_order(list_versions(models_dir), read_labels(models_dir)):
        try:
            verify_version(models_dir / str(number))
        except ModelError:
            continue
        return number
    return None


def newest_verified(models_dir: str | Path) -> int | None:
    """The newest version of `models_dir` whose files verify, or None."""
    for number in reversed(list_versions(models_dir)):
        try:
            verify_version(Path(models_dir) / str(number))
        except ModelError:
            continue
        return number
    return None


def rollback(models_dir: str | Path) -> Labels:
    """Make `previous` stable again (the rolled-back stable becomes previous, so a second rollback undoes it)."""
    models_dir = Path(models_dir)
    with durable.exclusive_lock(models_dir / LABELS_LOCK, "label change"):
        labels = read_labels(models_dir)
        if labels is None or labels.previous is None:
            raise ModelError(f"nothing to roll back to: {LABELS} has no 'previous' label")
        target = models_dir / str(labels.previous)
        if not target.is_dir():
            raise ModelError(f"label 'previous' names version {labels.previous}, which is no longer present")
        verify_version(target)
        new = labels.moved(labels.previous, labels.stable)
        write_labels(models_dir, new)
        return new


# -- the models directory: checks, builds ---------------------------------------------------------


def check_models_dir(path: str | Path, what: str) -> None:
    """`check_directory_path`, and ConfigError when `path` is a model version or lies inside one: a
    version given where its models directory was meant would get labels, logs and new versions
    nested inside it, beside nothing the service serves."""
    durable.check_directory_path(path, what)
    path = Path(path)
    for place in (path, *path.absolute().parents):
        if place.name.isdigit() and is_version_dir(place):  # a version is named by its number
            inside = "" if place == path else f" inside version {str(place)!r}"
            raise ConfigError(f"{what} {str(path)!r} is a model version{inside} (it holds {MANIFEST}); give the "
                              f"models directory that holds the versions: {str(place.parent)!r}")


def check_writable_dir(path: str | Path, what: str) -> None:
    """ConfigError naming `path` when this process cannot create entries in it, or, while it does not
    exist yet, in the nearest existing directory above it (where it would be created); nothing is
    left behind and a missing `path` stays missing.

    A probe, not `os.access`: root passes every mode check, while an immutable directory (`chattr
    +i`) or a read-only mount refuses it all the same. The probe is what an export does first (a
    `.building-<pid>-*` directory), so a run that will fail to write its version fails here, before
    minutes of training, naming the directory the user gave rather than the build's temporary path.
    """
    path = Path(path)
    place = next(p for p in (path, *path.absolute().parents) if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=building_prefix(), dir=place))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = "" if place == path else f" (it would be created in {str(place)!r}, which refuses new entries)"
        raise ConfigError(f"{what} {str(path)!r} is not writable{where}: {reason}; give a directory this user "
                          "can create files in") from None


def read_promotions(models_dir: str | Path, limit: int | None = None) -> tuple[list[dict[str, Any]] | None, int]:
    """The last `limit` entries (all: None) of `promotions.jsonl`, newest first, and how many lines were not
    JSON objects.

    None when the file does not exist yet (no retrain has run). A torn last line (a writer killed
    mid-append) is counted, not fatal.
    """
    path = Path(models_dir) / PROMOTIONS
    if not path.is_file():
        return None, 0
    entries: list[dict[str, Any]] = []
    bad = 0
    with path.open(encoding="utf-8", errors="replace") as stream:
        for line in stream:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                bad += 1
    return list(reversed(entries if limit is None else entries[-limit:])), bad


def building_prefix() -> str:
    """Prefix of this process's temporary build directories: `.building-<pid>-` (so the next run can tell it died)."""
    return f"{BUILDING_PREFIX}{os.getpid()}-"


def clean_stale_builds(models_dir: str | Path) -> list[str]:
    """Remove `.building-*` directories and temporary label files of runs that died; returns the names removed.

    A build is stale when the process named in it is not running (or, for a name without a pid,
    when it is older than STALE_BUILD_AGE_S). Builds of live processes are never touched.
    """
    models_dir = Path(models_dir)
    removed = []
    try:
        entries = list(models_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for path in entries:
        name = path.name
        if name.startswith(BUILDING_PREFIX):
            pid_text = name[len(BUILDING_PREFIX):].split("-", 1)[0]
        elif name.startswith(f".{LABELS}.") and name.endswith(".tmp"):
            pid_text = name[len(LABELS) + 2:].split(".", 1)[0]
        else:
            continue
        if pid_text.isdigit():
            stale = int(pid_text) != os.getpid() and not durable.process_alive(int(pid_text))
        else:
            try:
                stale = now - path.stat().st_mtime > STALE_BUILD_AGE_S
            except FileNotFoundError:
                continue
        if stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(name)
    return removed
