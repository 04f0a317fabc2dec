"""Training as a function: CRM data + dictionaries + config → one evaluated, exported model version.

`train(...)` is the whole training job that `python -m training.fit` runs after parsing its flags
and that `python -m training.retrain` runs to build a challenger. Steps: validate the data
(contract §2), build episodes and split them by time, learn the encoder's numeric statistics on
the training split, choose the network's configuration on the validation split
(`needs_rec.tuning`, unless the config's `search.enabled` is false or `search=False`), train it
with early stopping on the validation split, tune
per-characteristic thresholds on validation, evaluate on the test split side by side with the
baselines, and export a self-contained version with its report (`needs_rec.artifact.export`).

Inputs are typed values, not an argparse namespace; progress goes to a `Progress` object the
caller chooses (printing for the CLI, silent for tests and for retrain's quiet mode).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "sample"
DEFAULT_DICTIONARIES = REPO / "dictionaries"
STEPS = 11  # the `progress(...)` steps of one `train` run


class Progress:
    """Step-by-step progress on stdout (`quiet`: nothing); stderr is kept for the one-line error a data problem gets."""

    def __init__(self, total: int = STEPS, quiet: bool = False):
        self.total, self.quiet, self.step, self.start = total, quiet, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.step += 1
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"[{self.step}/{self.total} {elapsed:6.1f}s] {message}", flush=True)

    def note(self, text: str) -> None:
        """Free text between the steps (the validation report)."""
        if not self.quiet:
            print(text, flush=True)


@dataclass
class TrainResult:
    """What a training run produced: the exported version, its manifest and figures, the fitted parts."""

    version_dir: Path
    manifest: dict[str, Any]
    table: str  # the evaluation table (network vs baselines on the test split), as printed by `fit`
    encoder: Any  # needs_rec.features.FeatureEncoder, fitted
    network: Any  # keras.Model: encoded floats → probabilities

    @property
    def version(self) -> int:
        """The version number: the directory's name (the manifest never overrides it)."""
        return int(self.version_dir.name)


def inputs_fingerprint(
    crm: Any, dictionary_checksums: Any, config: dict[str, Any], seed: int, cutoff: dt.date | None = None,
    search: bool = True,
) -> str:
    """What a version was trained from, as one SHA-256: the clean CRM contents (`CrmData.fingerprint`),
    the dictionaries' checksums, the training config as requested (before the search chooses), the
    seed, the cutoff and whether the search ran. The same inputs train the same model (training is
    deterministic), so a retrain that finds its champion's fingerprint has nothing new to learn."""
    payload = {"crm": crm.fingerprint(), "dictionaries": dict(dictionary_checksums), "config": config,
               "seed": seed, "cutoff": cutoff.isoformat() if cutoff else None, "search": bool(search)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def feedback_summary(validation: Any) -> dict[str, int]:
    """The report's feedback counts, as the validation report has them: outcome rows that came from
    needs_rec's `feedback` table, and feedback rows not counted again because the CRM's outcomes hold
    the same event. Both 0 when no feedback table was read (docs/serving.md promises the first)."""
    notes = validation.notes
    return {
        "outcome rows from feedback": int(notes.get("outcome_rows_from_feedback", 0)),
        "feedback rows already counted": int(notes.get("feedback_rows_already_counted", 0)),
    }


def config_as_used(cfg: Any, seed: int) -> dict[str, Any]:
    """The manifest's `config`: the configuration trained (after the search chose) with the seed the run
    actually used (`--seed` wins over the config file's `seed`), so refitting from the manifest's config
    alone gives the same model. The inputs fingerprint keeps the config as requested instead."""
    import dataclasses

    return dataclasses.replace(cfg, seed=seed).to_dict()


def train(
    data: str | Path,
    dictionaries_dir: str | Path,
    models_dir: str | Path,
    *,
    config: str | Path | None = None,
    cutoff: dt.date | None = None,
    holdout_start: dt.date | None = None,
    seed: int | None = None,
    baselines: bool = True,
    gbt: bool = False,
    search: bool = True,
    progress: Progress | None = None,
    oracle: Any = None,
    extra_manifest: dict[str, Any] | None = None,
    validated: tuple[Any, Any] | None = None,
    fingerprint: str | None = None,
) -> TrainResult:
    """Train on `data` (a CRM directory or database URL, read through `crm.open_source`), export a
    new version under `models_dir`; NeedsRecError for bad input.

    `config`: a YAML file overriding needs_rec/default_config.yaml (None: the defaults).
    `cutoff`: train, validate and test on episodes before this date only (the held-out window of
    a retrain could start there). `holdout_start`: the test split is every episode from this date on
    (retrain's gate window), validation the config's share of the episodes before it, so the
    challenger trains on everything up to its validation split and its report is on the window.
    `seed`: None → the config's. `baselines`/`gbt`: fit the baselines
    (and the gradient-boosted trees) on the same split for the comparison table. `search`: False
    trains the config as given, without the per-firm configuration search.
    `oracle` (benchmarks only): a frame with contact_id, occurred_on, stage and one column per
    characteristic holding the generator's true probabilities; it is evaluated as one more method.
    `extra_manifest`: more keys for the manifest (retrain records its window there).
    `validated`: `(crm, report)` from `needs_rec.schema.validate` when the caller already read the
    data with these dictionaries (retrain does, to pick its window), so it is not read twice;
    `fingerprint`: its `inputs_fingerprint`, when the caller computed it already (retrain does).
    """
    # TensorFlow is imported only once the inputs are known good: argument and data errors answer
    # instantly, and a data error prints its one line with no TensorFlow chatter.
    import crm as crm_source
    from needs_rec import config as config_mod
    from needs_rec import dictionaries, drift, episodes, evaluation, schema, talking_points, versions
    from needs_rec import thresholds as thresholds_mod

    progress = progress or Progress(quiet=True)
    dictionaries_dir, models_dir = Path(dictionaries_dir), Path(models_dir)
    versions.check_models_dir(models_dir, "models directory")  # before minutes of training
    versions.check_writable_dir(models_dir, "models directory")  # likewise: not at the export's rename
    progress(f"loading dictionaries from {dictionaries_dir}")
    dicts = dictionaries.load(dictionaries_dir)
    cfg = config_mod.load_config(config)
    seed = cfg.seed if seed is None else seed

    if validated is not None:
        progress("CRM data already read and validated by the caller")
        crm, validation = validated
    else:
        with crm_source.open_source(data) as source:
            progress(f"reading and validating CRM data from {source.describe()}")  # never the password of a URL
            crm, validation = schema.validate(source.read_crm(), dicts)
    progress.note(str(validation))
    if fingerprint is None:
        fingerprint = inputs_fingerprint(crm, dicts.checksums, cfg.to_dict(), seed, cutoff, search)

    import tensorflow as tf

    from needs_rec import artifact, features, model, tuning
    from needs_rec import audience as audience_mod
    from needs_rec import similar as similar_mod
    from training import report as report_mod

    progress("building episodes and the time split")
    eps = episodes.build_episodes(crm.outcomes, dicts.characteristic_codes)
    split = episodes.time_split(
        eps.keys,
        validation_fraction=cfg.split.validation_fraction,
        test_fraction=cfg.split.test_fraction,
        cutoff=cutoff,
        contacts=crm.contacts,
        test_start=holdout_start,
    )
    frame = episodes.model_inputs(eps.keys, crm)
    y = eps.positives
    presented = (eps.positives > 0) | (eps.negatives > 0)
    tr, va, te = split.train, split.validation, split.test

    progress(f"encoding features ({int(tr.sum())} train / {int(va.sum())} validation / {int(te.sum())} test episodes)")
    encoder = features.FeatureEncoder(dicts).adapt(frame[tr])
    x = encoder.encode_frame(frame)

    verbose = 0 if progress.quiet else (1 if sys.stderr.isatty() else 2)
    # Explicit negatives let the network learn "presented" and "resonated" apart; a CRM that logs
    # only positives has none, and then every unpresented characteristic counts as a negative.
    explicit = bool(eps.negatives.any())
    stages = frame["stage"].to_numpy()
    # Every method, like the exported model, gives 0 where the stage has no talking point.
    offer = encoder.offer_mask(tf.constant(stages.astype(str))).numpy()
    shown_tr, shown_va = (presented[tr], presented[va]) if explicit else (None, None)
    links = dicts.catalogue_links()  # the wide path goes through the firm's products and needs
    timings: dict[str, float] = {}
    search_record = None
    if search and cfg.search.enabled:
        progress(f"choosing the network's configuration on validation ({cfg.search.trials} trials)")
        started = time.perf_counter()
        found = tuning.search(
            x[tr], y[tr], x[va], y[va], cfg, seed=seed, presented_train=shown_tr, presented_val=shown_va,
            offer_val=offer[va], links=links, log=progress.note,
        )  # fmt: skip
        cfg = found.config
        search_record = found.to_dict()
        timings["search_s"] = round(time.perf_counter() - started, 2)
        progress.note(found.summary())
    else:
        progress("configuration search skipped")

    progress(f"training the network ({encoder.width} inputs → {y.shape[1]} characteristics)")
    started = time.perf_counter()
    trained = model.train_network(
        x[tr], y[tr], x[va], y[va], cfg, seed=seed, verbose=verbose, presented_train=shown_tr, presented_val=shown_va,
        links=links,
    )  # fmt: skip
    timings["train_network_s"] = round(time.perf_counter() - started, 2)
    network = trained.model
    val_probas = {"network": _predict(network, x[va])}
    test_probas = {"network": _predict(network, x[te])}

    if baselines:
        progress("fitting baselines" + (" (with gradient-boosted trees)" if gbt else ""))
        shown = presented if explicit else None
        for name, (p_val, p_test) in fit_baselines(
            x, frame, y, tr, va, te, seed=seed, gbt=gbt, presented=shown, timings=timings
        ).items():
            val_probas[name], test_probas[name] = p_val, p_test
    else:
        progress("baselines skipped")
    if oracle is not None:
        truth = _align_oracle(oracle, eps.keys, dicts.characteristic_codes)
        val_probas["oracle"], test_probas["oracle"] = truth[va], truth[te]

    progress("tuning thresholds on validation and evaluating on test")
    for probas, part in ((val_probas, va), (test_probas, te)):
        for name in probas:
            probas[name] = probas[name] * offer[part]
    segments = evaluation.segments_for(stages[te], dicts.stage_codes, split.cold_start[te])
    offered_test = offer[te] > 0
    # what each method's probability means: with explicit negatives the network and the per-label
    # learners fit "resonates when presented"; the others "positive in the episode's label"
    per_presented = {"network", *PER_LABEL_LEARNERS} if explicit else set()
    meanings = {m: evaluation.PRESENTED if m in per_presented else evaluation.EPISODE for m in test_probas}
    comparison = evaluation.compare_methods(
        y[va], val_probas, y[te], test_probas, cfg.thresholds, segments, offered_test=offered_test,
        presented_test=presented[te] if explicit else None, meanings=meanings,
    )  # fmt: skip
    cuts = comparison.thresholds["network"]
    comparison.card = evaluation.card_precision(
        y[te], test_probas["network"], cuts, cfg.thresholds, offered=offered_test,
        presented=presented[te] if explicit else None,
    )  # fmt: skip
    table = evaluation.format_table(comparison)
    warnings = comparison.warnings()

    progress("evaluating ranked audiences and building the similar-organizations index")
    audience_gain = audience_mod.audience_gain(
        y[te], test_probas, stages[te], audience_mod.owns_product_matrix(frame.loc[te, "products_owned"], dicts),
        dicts.stage_codes, dicts.offered(),
    )
    organizations = similar_mod.build_for_version(
        encoder, network, crm, dicts.characteristic_codes, dicts.stage_codes,
        validation_start=split.validation_start, test_start=split.test_start,
        on=(cutoff or crm.outcomes["occurred_on"].max().date()), until=cutoff,
    )

    progress("computing reason statistics")
    resonance = talking_points.resonance_stats(
        frame.loc[tr, ["stage", "position", "industry"]].reset_index(drop=True),
        y[tr],
        presented[tr],
        dicts.characteristic_codes,
        explicit_negatives=explicit,
    )
    manifest = {
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "seed": seed,
        "vocabulary": dicts.characteristic_codes,
        "stages": dicts.stage_codes,
        "thresholds": [round(float(t), 6) for t in cuts],
        "top_k": cfg.thresholds.top_k,
        "min_selected": cfg.thresholds.min_selected,
        "dictionaries": {"checksums": dict(dicts.checksums), "sizes": dicts.summary()},
        "resonance": resonance,
        "metrics": comparison.to_dict(),
        "audience": audience_gain,
        "similar": organizations.summary,
        "warnings": warnings,
        "data": {
            "validation": validation.to_dict(),
            "fingerprint": fingerprint,
            "split": split.summary(),
            "best_epoch": trained.best_epoch,
        },
        "timings": timings,
        "config": config_as_used(cfg, seed),
        "search": search_record,
        "features": {"width": encoder.width, "numbers": encoder.stats_dict()},
        "drift": drift.training_profile(  # the training split's input distributions, for the service's drift check
            frame.loc[tr], dicts, {n: s.bin_edges for n, s in (encoder.number_stats or {}).items()}
        ),
        "libraries": _libraries(),
        **(extra_manifest or {}),
    }

    progress(f"exporting a new version under {models_dir}")
    test_sel = thresholds_mod.select_with(test_probas["network"], cuts, cfg.thresholds, offered_test)

    def write_extras(tmp: Path) -> None:
        shutil.copytree(dictionaries_dir, tmp / "dictionaries", ignore=shutil.ignore_patterns(".*"))
        organizations.write(tmp)
        report_mod.write_report(
            tmp,
            title="needs_rec model report",
            comparison=comparison,
            y_test=y[te],
            proba_test=test_probas["network"],
            selected_test=test_sel,
            stages_test=stages[te],
            stage_names={s.code: s.name for s in dicts.funnel_stages},
            characteristic_codes=dicts.characteristic_codes,
            characteristic_names=[c.name for c in dicts.characteristics],
            extra_summary={"episodes": len(eps.keys), **split.summary(), **feedback_summary(validation)},
            presented_test=presented[te] if explicit else None,
            audience=audience_gain,
            similar=organizations.summary,
            search=search_record,
        )

    version_dir = artifact.export(
        models_dir, encoder=encoder, network=network, manifest=manifest, write_extras=write_extras
    )
    manifest["version"] = int(version_dir.name)
    return TrainResult(version_dir=version_dir, manifest=manifest, table=table, encoder=encoder, network=network)


PER_LABEL_LEARNERS = frozenset({"logistic", "gradient_boosting"})


def fit_baselines(
    x: np.ndarray,
    frame: Any,
    y: np.ndarray,
    train: np.ndarray,
    validation: np.ndarray,
    test: np.ndarray,
    *,
    seed: int,
    gbt: bool,
    presented: np.ndarray | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fit each baseline on the training split; return its validation and test probabilities.

    `timings` (optional) receives each baseline's fit + predict seconds under `<name>_s`.

    The per-label learners (logistic regression, boosted trees) get the same explicit negatives as
    the network (`presented`): each label is fitted on the episodes where it was presented.
    """
    from needs_rec import baselines

    methods = baselines.default_baselines(gradient_boosting=gbt, random_state=seed)
    result = {}
    for name, method in methods.items():
        started = time.perf_counter()
        extra = {"presented": presented[train]} if presented is not None and name in PER_LABEL_LEARNERS else {}
        method.fit(x[train], frame[train].reset_index(drop=True), y[train], **extra)
        result[name] = tuple(
            method.predict_proba(x[part], frame[part].reset_index(drop=True)) for part in (validation, test)
        )
        if timings is not None:
            timings[f"{name}_s"] = round(time.perf_counter() - started, 2)
    return result


def _align_oracle(oracle: Any, keys: Any, vocabulary: list[str]) -> np.ndarray:
    """The oracle's probabilities in the episodes' row order (keys: contact_id, occurred_on, stage)."""
    import pandas as pd

    left = keys[["contact_id", "occurred_on", "stage"]].copy()
    left["occurred_on"] = pd.to_datetime(left["occurred_on"]).dt.strftime("%Y-%m-%d")
    right = oracle.copy()
    right["occurred_on"] = pd.to_datetime(right["occurred_on"]).dt.strftime("%Y-%m-%d")
    right["stage"] = right["stage"].astype(str).str.strip().str.lower()
    right["contact_id"] = right["contact_id"].astype(str).str.strip()
    merged = left.merge(right, on=["contact_id", "occurred_on", "stage"], how="left", validate="one_to_one")
    return merged[vocabulary].to_numpy(dtype=np.float32, na_value=0.0)


def _predict(network: Any, x: np.ndarray) -> np.ndarray:
    from needs_rec.model import predict

    return predict(network, x)


def _libraries() -> dict[str, str]:
    import keras
    import pandas
    import sklearn
    import tensorflow

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
    }
