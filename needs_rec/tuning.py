"""The network chooses its configuration per firm: an Optuna search on the validation split.

Why: defaults tuned on one firm's data do not carry over (issue 12: on a firm with 240
characteristics and rare labels the hand-tuned network lost to a plain 2×256 MLP). So every
training run tries a few configurations (`SearchConfig.trials`) on the firm's own data and keeps
the one with the best NDCG@5 on the validation split — the split early stopping and thresholds
already use; the test split stays untouched for the report. Trials within `TIE_SHARE` of the best
count as tied, and the network cheapest to serve among them wins (`choose`).

How: Optuna's TPE sampler, seeded, over `SPACE` (architecture, dropout, batch norm, wide path,
positive weighting, learning rate). Trial 0 is the configuration as given (the defaults unless the
user changed them) and trial 1 the plain-MLP shape (what the plain peer does, plus early
stopping), so the choice is never worse on validation than either. Each trial trains with
`needs_rec.model.train_network` on a seeded subsample of at most `max_rows` training rows for at
most `trial_epochs` epochs (early stopping after `trial_patience`); the winner is then trained by
the caller on the whole training split with the full epoch budget.

Determinism: the sampler's seed, the subsample and every trial's network come from `seed`, and the
trials run one after another, so the same data, config and seed give the same trials and the same
choice. The only exception is `budget_s`, a wall-time cap: when it stops the search before all
trials ran, `SearchResult.stopped_by_budget` says so (and the manifest and report repeat it).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from needs_rec import metrics
from needs_rec.config import Config

#: Hidden-layer shapes the search may pick (input side first), as "256-128" strings.
HIDDEN_CHOICES: tuple[str, ...] = ("256-128", "512-256", "256-256", "512", "1024-512")
#: Ranges of the other searched keys (see `_suggest`).
DROPOUT_RANGE = (0.0, 0.5)
INPUT_DROPOUT_CHOICES = (0.0, 0.1)
LEARNING_RATE_RANGE = (3e-4, 3e-3)
WEIGHTING_CHOICES = ("none", "sqrt")
#: The plain-MLP shape enqueued as trial 1 (`needs_rec.baselines.PlainMLPBaseline` with early stopping).
PLAIN_TRIAL: Mapping[str, Any] = {
    "hidden_units": "256-256",
    "dropout": 0.0,
    "input_dropout": 0.0,
    "batch_norm": False,
    "wide": False,
    "positive_weighting": "none",
    "learning_rate": 1e-3,
}
OBJECTIVE = "ndcg@5"
#: Trials within this share of the best validation NDCG@5 count as tied, and among them the network
#: with the fewest weights wins: the served answer pays for every weight on every request (a
#: 1024-512 network costs ≈ 8× the matmuls of a 256-256 one, and its reasons the same again), while a
#: difference this small is far below what one validation split can tell apart (≈ ±0.02 between splits).
TIE_SHARE = 0.005


@dataclass(frozen=True)
class TrialRecord:
    """One tried configuration and how it did on the validation split."""

    number: int
    params: dict[str, Any]
    value: float  # validation NDCG@5 (higher is better)
    best_epoch: int
    seconds: float


@dataclass
class SearchResult:
    """The chosen configuration and the search behind it (JSON-ready through `to_dict`)."""

    config: Config
    trials: list[TrialRecord]
    best: int  # number of the chosen trial
    elapsed_s: float
    stopped_by_budget: bool
    rows: int  # training rows each trial saw
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> TrialRecord:
        return next(t for t in self.trials if t.number == self.best)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": f"validation {OBJECTIVE}",
            "choice": f"the fewest weights within {TIE_SHARE:.1%} of the best validation {OBJECTIVE}",
            "sampler": "optuna TPE",
            "settings": self.settings,
            "rows_per_trial": self.rows,
            "elapsed_s": round(self.elapsed_s, 2),
            "stopped_by_budget": self.stopped_by_budget,
            "chosen_trial": self.best,
            "chosen": self.chosen.params,
            "trials": [self._trial(t) for t in self.trials],
        }

    @staticmethod
    def _trial(t: TrialRecord) -> dict[str, Any]:
        return {"number": t.number, "params": t.params, OBJECTIVE: round(t.value, 6), "best_epoch": t.best_epoch,
                "seconds": round(t.seconds, 2)}  # fmt: skip

    def summary(self) -> str:
        """One line for progress output and the report."""
        c = self.chosen
        cut = ", stopped by the time budget" if self.stopped_by_budget else ""
        return (
            f"searched {len(self.trials)} configurations in {self.elapsed_s:.0f} s{cut}; chose trial {c.number} "
            f"({describe(c.params)}; validation {OBJECTIVE} {c.value:.4f})"
        )


def describe(params: Mapping[str, Any]) -> str:
    """Short human form of a trial's parameters."""
    return (
        f"hidden {params['hidden_units']}, dropout {params['dropout']:g}/{params['input_dropout']:g}, "
        f"batch norm {'on' if params['batch_norm'] else 'off'}, wide {'on' if params['wide'] else 'off'}, "
        f"weighting {params['positive_weighting']}, lr {params['learning_rate']:.2g}"
    )


def params_of(config: Config) -> dict[str, Any]:
    """The searched keys of `config`, in the search's form."""
    n, t = config.network, config.training
    return {
        "hidden_units": "-".join(str(u) for u in n.hidden_units),
        "dropout": float(n.dropout),
        "input_dropout": float(n.input_dropout),
        "batch_norm": bool(n.batch_norm),
        "wide": bool(n.wide),
        "positive_weighting": t.positive_weighting,
        "learning_rate": float(t.learning_rate),
    }


def apply_params(config: Config, params: Mapping[str, Any]) -> Config:
    """`config` with the searched keys replaced by `params`."""
    network = dataclasses.replace(
        config.network,
        hidden_units=tuple(int(u) for u in str(params["hidden_units"]).split("-")),
        dropout=float(params["dropout"]),
        input_dropout=float(params["input_dropout"]),
        batch_norm=bool(params["batch_norm"]),
        wide=bool(params["wide"]),
    )
    training = dataclasses.replace(
        config.training,
        positive_weighting=str(params["positive_weighting"]),
        learning_rate=float(params["learning_rate"]),
    )
    return dataclasses.replace(config, network=network, training=training)


def network_weights(params: Mapping[str, Any], n_inputs: int, n_outputs: int) -> int:
    """Weights a trial's network multiplies per answered row: its Dense stack, plus the wide path when on."""
    sizes = [n_inputs, *(int(u) for u in str(params["hidden_units"]).split("-")), n_outputs]
    deep = sum(a * b for a, b in itertools.pairwise(sizes))
    return deep + (n_inputs * n_outputs if params.get("wide") else 0)


def choose(records: list[TrialRecord], *, n_inputs: int, n_outputs: int) -> TrialRecord:
    """The trial to keep: the cheapest network to serve among those within `TIE_SHARE` of the best
    validation NDCG@5; among equally cheap ones the better, then the earlier (the configuration as given first)."""
    top = max(r.value for r in records)
    tied = [r for r in records if r.value >= top * (1.0 - TIE_SHARE)]
    return min(tied, key=lambda r: (network_weights(r.params, n_inputs, n_outputs), -r.value, r.number))


def _suggest(trial: Any, hidden_choices: tuple[str, ...]) -> dict[str, Any]:
    return {
        "hidden_units": trial.suggest_categorical("hidden_units", hidden_choices),
        "dropout": round(trial.suggest_float("dropout", *DROPOUT_RANGE, step=0.1), 2),
        "input_dropout": trial.suggest_categorical("input_dropout", INPUT_DROPOUT_CHOICES),
        "batch_norm": trial.suggest_categorical("batch_norm", (True, False)),
        "wide": trial.suggest_categorical("wide", (True, False)),
        "positive_weighting": trial.suggest_categorical("positive_weighting", WEIGHTING_CHOICES),
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE_RANGE, log=True),
    }


def search(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: Config,
    *,
    seed: int,
    presented_train: np.ndarray | None = None,
    presented_val: np.ndarray | None = None,
    offer_val: np.ndarray | None = None,
    links: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Try `config.search.trials` configurations; return the one with the best validation NDCG@5.

    `presented_*` (explicit negatives) are passed on to `train_network`; `offer_val` (n_val, C) is
    the stage offer mask multiplied into the validation probabilities, as for the exported model;
    `links` the catalogue the wide path goes through (`needs_rec.model.build_network`).
    """
    import optuna

    from needs_rec.model import predict, train_network

    settings = config.search
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = np.arange(len(x_train))
    if len(rows) > settings.max_rows:
        rows = np.sort(rng.choice(len(rows), settings.max_rows, replace=False))
    x_sub, y_sub = x_train[rows], y_train[rows]
    shown_sub = None if presented_train is None else presented_train[rows]
    y_score = np.asarray(y_val)

    base = params_of(config)
    hidden = HIDDEN_CHOICES if base["hidden_units"] in HIDDEN_CHOICES else (base["hidden_units"], *HIDDEN_CHOICES)
    records: list[TrialRecord] = []

    def objective(trial: Any) -> float:
        params = _suggest(trial, hidden)
        trial_config = apply_params(config, params)
        trial_config = dataclasses.replace(
            trial_config,
            training=dataclasses.replace(
                trial_config.training,
                max_epochs=min(settings.trial_epochs, config.training.max_epochs),
                patience=settings.trial_patience,
                reduce_lr_patience=0,
            ),
        )
        begun = time.perf_counter()
        trained = train_network(
            x_sub, y_sub, x_val, y_val, trial_config, seed=seed,
            presented_train=shown_sub, presented_val=presented_val, links=links,
        )  # fmt: skip
        proba = predict(trained.model, x_val)
        if offer_val is not None:
            proba = proba * offer_val
        value = metrics.ndcg_at_k(y_score, proba, 5)
        value = 0.0 if not np.isfinite(value) else float(value)
        records.append(TrialRecord(trial.number, params, value, trained.best_epoch, time.perf_counter() - begun))
        if log is not None:
            log(f"  trial {trial.number}: {describe(params)} → validation {OBJECTIVE} {value:.4f} "
                f"({time.perf_counter() - begun:.0f} s)")  # fmt: skip
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(4, settings.trials)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(base)
    if settings.trials > 1 and base != PLAIN_TRIAL:
        study.enqueue_trial(dict(PLAIN_TRIAL))
    study.optimize(objective, n_trials=settings.trials, timeout=settings.budget_s, gc_after_trial=False)
    best = choose(records, n_inputs=x_train.shape[1], n_outputs=y_train.shape[1])
    return SearchResult(
        config=apply_params(config, best.params),
        trials=records,
        best=best.number,
        elapsed_s=time.perf_counter() - started,
        stopped_by_budget=len(records) < settings.trials,
        rows=len(rows),
        settings=dataclasses.asdict(settings),
    )
