"""`python -m training.fit`: CRM export + dictionaries → a new, evaluated model version.

With no flags it trains on the sample CRM and dictionaries shipped in the repo and writes to
`models/`. Steps: validate the data (contract §2), build episodes and split them by time, learn
the encoder's numeric statistics on the training split, train the network with early stopping on
the validation split, tune per-characteristic thresholds on validation, evaluate on the test split
side by side with baselines, and export a self-contained version with its report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "sample"
DEFAULT_DICTIONARIES = REPO / "dictionaries"
DEFAULT_OUTPUT = Path("models")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.fit",
        description="Train, evaluate and export a new needs_rec model version.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CRM directory (CSV or Parquet tables)")
    parser.add_argument("--dictionaries", type=Path, default=DEFAULT_DICTIONARIES, help="reference dictionaries")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="models directory; a new version is added")
    parser.add_argument("--config", type=Path, default=None, help="YAML overriding needs_rec/default_config.yaml")
    parser.add_argument("--cutoff", type=_date, default=None, help="train on episodes before YYYY-MM-DD (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    parser.add_argument(
        "--gbt", action="store_true", help="also run the gradient-boosted-trees baseline (slow, strongest peer)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip all baselines (faster, no comparison)")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser.parse_args(argv)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--cutoff must be a date YYYY-MM-DD, got {text!r}") from exc


class Progress:
    """Step-by-step progress on stdout; stderr is kept for the one-line error a data problem gets."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.step, self.start = total, quiet, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.step += 1
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"[{self.step}/{self.total} {elapsed:6.1f}s] {message}", flush=True)


@dataclass
class FitResult:
    """What a fit produced: where the version went and what was measured."""

    version_dir: Path
    manifest: dict[str, Any]
    table: str
    encoder: Any  # needs_rec.features.FeatureEncoder, fitted
    network: Any  # keras.Model: encoded floats → probabilities


def fit(args: argparse.Namespace, oracle: Any = None) -> FitResult:
    """Run the whole training job; raises NeedsRecError subclasses for bad input.

    `oracle` (benchmarks only): a frame with contact_id, occurred_on, stage and one column per
    characteristic holding the generator's true probabilities; it is evaluated as one more method
    so the table shows how close the network comes to the best achievable.
    """
    # TensorFlow is imported only once the inputs are known good: `--help`, argument and data
    # errors answer instantly, and a data error prints its one line with no TensorFlow chatter.
    from needs_rec import config, dictionaries, episodes, evaluation, schema, talking_points
    from needs_rec import thresholds as thresholds_mod
    from training import data as data_io

    progress = Progress(9, args.quiet)
    progress(f"loading dictionaries from {args.dictionaries}")
    dicts = dictionaries.load(args.dictionaries)
    cfg = config.load_config(args.config)
    seed = cfg.seed if args.seed is None else args.seed

    progress(f"reading and validating CRM data from {args.data}")
    crm, validation = schema.validate(data_io.read_crm(args.data), dicts)
    if not args.quiet:
        print(str(validation), flush=True)

    import tensorflow as tf

    from needs_rec import artifact, features, model
    from training import report as report_mod

    progress("building episodes and the time split")
    eps = episodes.build_episodes(crm.outcomes, dicts.characteristic_codes)
    split = episodes.time_split(
        eps.keys,
        validation_fraction=cfg.split.validation_fraction,
        test_fraction=cfg.split.test_fraction,
        cutoff=args.cutoff,
        contacts=crm.contacts,
    )
    frame = episodes.model_inputs(eps.keys, crm)
    y = eps.positives
    presented = (eps.positives > 0) | (eps.negatives > 0)
    tr, va, te = split.train, split.validation, split.test

    progress(f"encoding features ({int(tr.sum())} train / {int(va.sum())} validation / {int(te.sum())} test episodes)")
    encoder = features.FeatureEncoder(dicts).adapt(frame[tr])
    x = encoder.encode_frame(frame)

    progress(f"training the network ({encoder.width} inputs → {y.shape[1]} characteristics)")
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    started = time.perf_counter()
    # Explicit negatives let the network learn "presented" and "resonated" apart; a CRM that logs
    # only positives has none, and then every unpresented characteristic counts as a negative.
    explicit = bool(eps.negatives.any())
    trained = model.train_network(
        x[tr], y[tr], x[va], y[va], cfg, seed=seed, verbose=verbose,
        presented_train=presented[tr] if explicit else None,
        presented_val=presented[va] if explicit else None,
    )
    timings = {"train_network_s": round(time.perf_counter() - started, 2)}
    network = trained.model
    val_probas = {"network": _predict(network, x[va])}
    test_probas = {"network": _predict(network, x[te])}

    if not args.no_baselines:
        progress("fitting baselines" + (" (with gradient-boosted trees)" if args.gbt else ""))
        shown = presented if explicit else None
        for name, (p_val, p_test) in fit_baselines(
            x, frame, y, tr, va, te, seed=seed, gbt=args.gbt, presented=shown
        ).items():
            val_probas[name], test_probas[name] = p_val, p_test
    else:
        progress("baselines skipped")
    if oracle is not None:
        truth = _align_oracle(oracle, eps.keys, dicts.characteristic_codes)
        val_probas["oracle"], test_probas["oracle"] = truth[va], truth[te]

    progress("tuning thresholds on validation and evaluating on test")
    stages = frame["stage"].to_numpy()
    # Every method, like the exported model, gives 0 where the stage has no talking point.
    offer = encoder.offer_mask(tf.constant(stages.astype(str))).numpy()
    for probas, part in ((val_probas, va), (test_probas, te)):
        for name in probas:
            probas[name] = probas[name] * offer[part]
    segments = evaluation.segments_for(stages[te], dicts.stage_codes, split.cold_start[te])
    comparison = evaluation.compare_methods(y[va], val_probas, y[te], test_probas, cfg.thresholds, segments)
    cuts = comparison.thresholds["network"]
    table = evaluation.format_table(comparison)
    warnings = comparison.warnings()

    progress("computing reason statistics")
    resonance = talking_points.resonance_stats(
        frame.loc[tr, ["stage", "position", "industry"]].reset_index(drop=True),
        y[tr],
        presented[tr],
        dicts.characteristic_codes,
    )
    manifest = {
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "seed": seed,
        "vocabulary": dicts.characteristic_codes,
        "stages": dicts.stage_codes,
        "thresholds": [round(float(t), 6) for t in cuts],
        "top_k": cfg.thresholds.top_k,
        "dictionaries": {"checksums": dict(dicts.checksums), "sizes": dicts.summary()},
        "resonance": resonance,
        "metrics": comparison.to_dict(),
        "warnings": warnings,
        "data": {
            "validation": validation.to_dict(),
            "split": split.summary(),
            "best_epoch": trained.best_epoch,
        },
        "timings": timings,
        "config": cfg.to_dict(),
        "features": {"width": encoder.width, "numbers": encoder.stats_dict()},
        "libraries": _libraries(),
    }

    progress(f"exporting a new version under {args.output}")
    test_sel = thresholds_mod.select(test_probas["network"], cuts, cfg.thresholds.top_k)

    def write_extras(tmp: Path) -> None:
        shutil.copytree(args.dictionaries, tmp / "dictionaries", ignore=shutil.ignore_patterns(".*"))
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
            extra_summary={"episodes": len(eps.keys), **split.summary()},
            presented_test=presented[te] if explicit else None,
        )

    version_dir = artifact.export(
        args.output, encoder=encoder, network=network, manifest=manifest, write_extras=write_extras
    )
    manifest["version"] = int(version_dir.name)
    return FitResult(version_dir=version_dir, manifest=manifest, table=table, encoder=encoder, network=network)


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
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fit each baseline on the training split; return its validation and test probabilities.

    The per-label learners (logistic regression, boosted trees) get the same explicit negatives as
    the network (`presented`): each label is fitted on the episodes where it was presented.
    """
    from needs_rec import baselines

    methods = baselines.default_baselines(gradient_boosting=gbt, random_state=seed)
    result = {}
    for name, method in methods.items():
        extra = {"presented": presented[train]} if presented is not None and name in PER_LABEL_LEARNERS else {}
        method.fit(x[train], frame[train].reset_index(drop=True), y[train], **extra)
        result[name] = tuple(
            method.predict_proba(x[part], frame[part].reset_index(drop=True)) for part in (validation, test)
        )
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
    return np.asarray(network.predict(x, batch_size=8192, verbose=0), dtype=np.float32)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = fit(args)
    print(result.table)
    for warning in result.manifest.get("warnings", []):
        print(f"warning: {warning}")
    print(f"\nmodel version {result.manifest['version']} written to {result.version_dir}")
    print(example_talking_points(result.version_dir, args))
    return 0


def example_talking_points(version_dir: Path, args: argparse.Namespace) -> str:
    """Talking points for one example contact, scored by the exported model (what a manager would see)."""
    from training.example import render_example

    return render_example(version_dir, args.data, args.dictionaries)


if __name__ == "__main__":
    from training._cli import run_cli

    run_cli(main)
