"""`python -m training.retrain --data D --dictionaries K --models M [--config C] [--gate G]` (contract §7).

Trains a challenger with the most recent window of episodes held out, scores it and the champion
(the `stable` version) on that same window with their own SavedModels, and promotes the challenger
only if it passes the gate (`needs_rec.gate`; G merged over needs_rec/default_gate.yaml). Prints
one line with the decision and the figures behind it and appends the same as one JSON object to
`M/promotions.jsonl`. Exit code 0: promoted (or the first version, with no champion yet); 3: the
gate kept the champion; 2: a data or config error, or another retrain is running.

What is promoted is the challenger itself, the very model the gate measured, not a refit on all
data after the gate: the figures in promotions.jsonl then describe exactly what serves, nothing
unmeasured reaches managers, and a nightly run costs one training, not two. The price is that the
served model has not learned from the newest window; the next run moves the window forward, so
the lag is one window (docs/operations.md).

Safe under faults: one retrain at a time per models directory (`M/.retrain.lock`, a flock the
kernel drops when its holder dies, so a killed run's lock is stale at once); before a challenger
is exported, a models directory without labels gets `stable` = the version serving now, so the
challenger is a candidate and never served before the gate decides; versions are built hidden and
renamed into place, labels.json is replaced atomically, and `.building-*` leftovers of dead runs
are removed by the next run. A kill at any moment leaves labels.json naming a loadable version.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from needs_rec import durable, versions
from needs_rec import gate as gate_mod
from needs_rec.cli import ArgumentParser, describe, one_line, run_cli, seed_value
from needs_rec.errors import ModelError, NeedsRecError
from training.train import DEFAULT_DICTIONARIES, Progress, inputs_fingerprint, train

EXIT_PROMOTED, EXIT_KEPT, EXIT_ERROR = 0, 3, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m training.retrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CRM directory (CSV or Parquet tables) or database URL")
    parser.add_argument("--dictionaries", type=Path, default=DEFAULT_DICTIONARIES, help="reference dictionaries")
    parser.add_argument("--models", type=Path, required=True, help="models directory (labels.json, promotions.jsonl)")
    parser.add_argument("--config", type=Path, default=None, help="training YAML over needs_rec/default_config.yaml")
    parser.add_argument("--gate", type=Path, default=None, help="gate YAML over needs_rec/default_gate.yaml")
    parser.add_argument("--seed", type=seed_value, default=None, help="random seed (default: the config's)")
    parser.add_argument("--verbose", action="store_true", help="print the training steps too")
    return parser.parse_args(argv)


@dataclass
class Decision:
    """What one retrain decided, as printed and as appended to promotions.jsonl."""

    decision: str  # promoted | first | kept | error
    reasons: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"promoted": EXIT_PROMOTED, "first": EXIT_PROMOTED, "kept": EXIT_KEPT}.get(self.decision, EXIT_ERROR)

    def line(self) -> str:
        r = self.record
        head = {
            "promoted": f"retrain: promoted version {r.get('challenger')} to stable (champion was {r.get('champion')})",
            "first": f"retrain: promoted version {r.get('challenger')} to stable (first version, no champion)",
            "kept": f"retrain: kept champion {r.get('champion')}"
                    + (f"; challenger {r['challenger']} stays a candidate" if r.get("challenger") else ""),
            "error": "retrain: error",
        }[self.decision]
        return one_line(f"{head}: {'; '.join(self.reasons)}")


def retrain(args: argparse.Namespace, record: dict[str, Any] | None = None) -> Decision:
    """The whole retrain; raises NeedsRecError for data/config problems. The config, the gate and the
    data are checked before the models directory is touched; the decision is taken under its lock.
    `record` (filled as the run learns: champion, window, challenger, figures) is what an error
    record keeps of a run that failed after it had trained."""
    record = {} if record is None else record
    import crm as crm_source
    from needs_rec import config as config_mod
    from needs_rec import dictionaries, schema

    started = time.perf_counter()
    # Config and data are read and checked before the models directory is touched (contract §2: a data
    # error writes nothing): a --models that does not exist yet is not created, nor its lock file.
    gate = gate_mod.load_gate(args.gate)
    cfg = config_mod.load_config(args.config)
    seed = cfg.seed if args.seed is None else args.seed
    dicts = dictionaries.load(args.dictionaries)
    with crm_source.open_source(args.data) as source:
        described = source.describe()  # never a password
        crm, report = schema.validate(source.read_crm(), dicts)
    models: Path = args.models
    created = _make_dirs(models)
    try:
        return _decide(args, models, gate, cfg, seed, dicts, (crm, report), described, started, record)
    except durable.LockBusy:
        raise  # the directory and its lock are another run's
    except BaseException:
        _remove_if_untouched(models, created)  # an error later on still leaves no new models directory
        raise


def _decide(args: argparse.Namespace, models: Path, gate: Any, cfg: Any, seed: int, dicts: Any,
            validated: tuple[Any, Any], described: str, started: float, record: dict[str, Any]) -> Decision:
    """Everything under the lock: champion, window, challenger, gate; `validated` is the clean CRM and
    its report, read before the models directory was touched."""
    from needs_rec import episodes, schema

    crm, report = validated
    record.update({"gate": gate.to_dict(), "data": described})
    with durable.exclusive_lock(models / versions.RETRAIN_LOCK, "retrain") as stale:
        if stale:
            record["stale_lock"] = stale
        cleaned = versions.clean_stale_builds(models)
        if cleaned:
            record["cleaned"] = cleaned
        unjudged = _unjudged(models)
        if unjudged:
            record["unjudged"] = unjudged
        # Read, not pinned yet: a data or config error below must leave the models directory as it was.
        labelled = versions.serving_stable(models)  # the 'stable' label (without labels: the newest that verifies)
        champion = versions.served_version(models)  # what serves now, so what the challenger must beat
        record["champion"] = champion
        notes = [] if champion == labelled else [
            f"label 'stable' names version {labelled}, which is missing or fails its checks; "
            + (f"the champion is version {champion}, which serves now" if champion else "no version serves now")
        ]
        if unjudged:
            notes.append(f"version(s) {', '.join(map(str, unjudged))} were exported by a retrain that stopped before "
                         "its gate decided; they stay candidates (`serving.promote --version N` serves one by hand)")

        fingerprint = inputs_fingerprint(crm, dicts.checksums, cfg.to_dict(), seed)
        if champion is not None and _fingerprint_of(models / str(champion)) == fingerprint:
            record["seconds"] = round(time.perf_counter() - started, 1)
            return Decision("kept", [*notes, f"nothing new since version {champion} was trained: the same CRM data, "
                                     "dictionaries, config and seed; no challenger trained"], record)
        eps = episodes.build_episodes(crm.outcomes, dicts.characteristic_codes)
        dates = eps.keys[schema.OCCURRED_ON].to_numpy().astype("datetime64[D]")
        start = gate_mod.window_start(dates, gate.window)
        in_window = dates >= start
        y = eps.positives
        explicit = bool(eps.negatives.any())
        window_episodes = int(((y[in_window] > 0).sum(axis=1) > 0).sum())
        record["window"] = {
            "start": str(start), "end": str(dates.max()), "episodes": int(in_window.sum()),
            "positive_episodes": window_episodes, "explicit_negatives": explicit,
        }
        if champion is not None and window_episodes < gate.min_window_episodes:
            record["seconds"] = round(time.perf_counter() - started, 1)
            return Decision("kept", [*notes, f"too little new data: {window_episodes} window episodes with a positive "
                                     f"outcome since {start} (the gate needs ≥ {gate.min_window_episodes}); "
                                     "no challenger trained"], record)

        # Pinned before the challenger exists: it must never serve unjudged.
        pinned = versions.pin_stable(models, verified=labelled)
        progress = Progress(quiet=not args.verbose)
        result = train(
            args.data, args.dictionaries, models, config=args.config, holdout_start=start.item(), seed=args.seed,
            baselines=False, progress=progress, validated=(crm, report), fingerprint=fingerprint,
            extra_manifest={"retrain": {"window_start": str(start), "champion": champion}},
        )
        challenger = result.version
        record["challenger"] = challenger

        frame = episodes.model_inputs(eps.keys[in_window].reset_index(drop=True), crm)
        stages = frame["stage"].to_numpy().astype(str)
        stage_index = {code: i for i, code in enumerate(dicts.stage_codes)}
        offered = dicts.offered()[[stage_index[s] for s in stages]]
        y_window = y[in_window]
        presented = ((eps.positives > 0) | (eps.negatives > 0))[in_window]
        calibration_mask = presented if explicit else offered

        def scores(proba: np.ndarray) -> gate_mod.Scores:
            return gate_mod.score(y_window, proba, stages, dicts.stage_codes, calibration_mask)

        challenger_scores = scores(_predict(result.version_dir, frame))
        popularity = scores(gate_mod.popularity(y[dates < start], len(frame), offered))
        champion_scores, note = None, None
        if champion is not None:
            try:
                champion_scores = scores(_predict(models / str(champion), frame, dicts.characteristic_codes))
            except ModelError as exc:
                note = f"champion {champion} cannot be scored ({one_line(exc)}); judged on the absolute checks only"
        record["metrics"] = {
            "challenger": challenger_scores.to_dict(),
            "champion": champion_scores.to_dict() if champion_scores else None,
            "popularity": popularity.to_dict(),
        }
        checks = gate_mod.decide(gate, window_episodes=window_episodes, challenger=challenger_scores,
                                 champion=champion_scores, popularity=popularity)
        record["checks"] = [c.to_dict() for c in checks]
        failed = [c for c in checks if not c.passed]
        reasons = notes + ([note] if note else []) + [c.text for c in (failed or checks)]
        record["seconds"] = round(time.perf_counter() - started, 1)
        if champion is None:
            labels = versions.promote(models, challenger)
            record["labels"] = labels.to_dict()
            waived = "the gate's checks are not applied without a champion; they read: " + "; ".join(
                c.text for c in checks)
            return Decision("first", [*notes, *([note] if note else []), waived], record)
        if failed:
            return Decision("kept", ["failed " + ", ".join(c.key for c in failed), *reasons], record)
        labels = versions.promote(models, challenger, replacing=pinned)
        record["labels"] = labels.to_dict()
        return Decision("promoted", reasons, record)


def _make_dirs(models: Path) -> list[Path]:
    """Create `models` and its missing parents; return the directories this very call created, deepest
    first (one another process created meanwhile is not counted: it is not this run's to remove)."""
    missing = []
    for place in (models, *models.parents):
        if place.exists():
            break
        missing.append(place)
    created = []
    for place in reversed(missing):
        try:
            place.mkdir()
        except FileExistsError:
            continue
        created.append(place)
    models.mkdir(parents=True, exist_ok=True)  # a file in the way raises here, as before
    return created[::-1]


def _remove_if_untouched(models: Path, created: list[Path]) -> None:
    """Undo `_make_dirs` after a failed run: when this run created `models` and it holds nothing but the
    lock files, remove them and the created directories, so a failed first run leaves no trace. A
    directory that holds anything else (a version, a log) is left as it is."""
    if not created:
        return
    own = {versions.RETRAIN_LOCK, versions.LABELS_LOCK}
    try:
        if any(entry.name not in own for entry in models.iterdir()):
            return
        for name in own:
            (models / name).unlink(missing_ok=True)
        for place in created:
            place.rmdir()
    except OSError:
        pass  # best effort: the run's own error is the one to report


def _unjudged(models: Path) -> list[int]:
    """Versions a retrain exported whose decision no promotions.jsonl record holds: the run was killed
    between its export and its record. Named once (the record that names them counts as theirs)."""
    entries, _ = versions.read_promotions(models)
    judged: set[int] = set()
    for entry in entries or []:  # a hand-edited line may hold anything: only whole numbers count
        named = [entry.get("challenger"), *(entry.get("unjudged") if isinstance(entry.get("unjudged"), list) else [])]
        judged.update(n for n in named if isinstance(n, int))
    labels = versions.read_labels(models)
    labelled = {labels.stable, labels.previous} if labels is not None else set()
    found = []
    for number in versions.list_versions(models):
        if number in judged or number in labelled:
            continue
        try:
            retrained = versions.read_manifest(models / str(number)).get("retrain")
        except ModelError:
            continue
        if isinstance(retrained, dict):
            found.append(number)
    return found


def _fingerprint_of(version_dir: Path) -> str | None:
    """The inputs fingerprint a version was trained from (`training.train.inputs_fingerprint`), or None
    for a version made before versions carried one."""
    try:
        data = versions.read_manifest(version_dir).get("data") or {}
    except ModelError:
        return None
    return data.get("fingerprint") if isinstance(data, dict) else None


def _predict(version_dir: Path, frame: Any, vocabulary: list[str] | None = None) -> np.ndarray:
    """Probabilities of one exported version over the window's raw model inputs (its own SavedModel)."""
    from needs_rec import artifact, features

    loaded = artifact.load(version_dir)
    if vocabulary is not None and loaded.vocabulary != vocabulary:
        raise ModelError(f"version {version_dir.name} was trained with other characteristics than the "
                         "dictionaries now hold, so the two cannot be compared on the same window")
    return loaded.predict(features.frame_to_inputs(frame))


def append_record(models: Path, decision: Decision) -> None:
    """One JSON object per retrain in M/promotions.jsonl (best effort when the directory itself is the problem)."""
    entry = {
        "at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "action": "retrain",
        "decision": decision.decision,
        "line": decision.line(),
        "pid": os.getpid(),
        **decision.record,
    }
    if models.is_dir():
        durable.append_line(models / versions.PROMOTIONS, json.dumps(entry, ensure_ascii=False, allow_nan=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    versions.check_models_dir(args.models, "--models")  # no lock file or log line in a file's or a version's place
    versions.check_writable_dir(args.models, "--models")  # before the lock and minutes of training
    learned: dict[str, Any] = {}
    try:
        decision = retrain(args, learned)
    except (NeedsRecError, OSError) as exc:
        message = describe(exc)  # the line the user reads
        exported = learned.get("challenger") is not None  # trained and exported before the failure: it stays
        if exported:
            message += f"; challenger {learned['challenger']} stays a candidate"
        # What the run learned (its window, challenger, figures) stays on record: the challenger is judged.
        decision = Decision("error", [message], {**learned, "error": message})
        if not isinstance(exc, durable.LockBusy):
            with contextlib.suppress(OSError):  # a full disk may refuse the record too: the error line still shows
                append_record(args.models, decision)
        if exported:
            raise ModelError(message) from None
        raise
    append_record(args.models, decision)
    print(decision.line())
    return decision.exit_code


if __name__ == "__main__":
    run_cli(main)
