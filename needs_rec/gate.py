"""The champion/challenger gate of `python -m training.retrain` (contract §7): its YAML, the window, the checks.

TensorFlow-free: it works on probability matrices that retrain computes with both versions'
SavedModels over the same held-out window of the most recent episodes.

The gate file (`--gate G`) is deep-merged over the packaged `default_gate.yaml`; every key is
validated with the training config's rules, and errors name the key. The checks, all on the window:

* `min_window_episodes` — episodes with a positive outcome in the window: too few and the champion
  stays (there is not enough new evidence to judge a challenger);
* `min_ndcg_vs_champion` — challenger NDCG@5 ≥ this × champion NDCG@5 (a change threshold, like
  Dynamics 365's "95% of the active model");
* `max_stage_drop` — no funnel stage (with at least `min_stage_episodes` window episodes) has a
  challenger NDCG@5 below (1 − this) × the champion's there;
* `max_calibration_error` — the challenger's expected calibration error (presented cells when the
  outcomes carry explicit negatives, else every offered cell) at most this;
* `min_ndcg_vs_popularity` — challenger NDCG@5 ≥ this × the popularity baseline's on the same
  window (a value threshold, like TFX's: a challenger that merely ties a champion on broken data,
  where nothing beats "recommend what is popular", is no winner).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from needs_rec import metrics, yaml_text
from needs_rec.config import _build, _deep_merge, _read_yaml, _spec, _to_plain
from needs_rec.errors import ConfigError, DataError

DEFAULT_GATE_FILE = "default_gate.yaml"
K = 5


@dataclass(frozen=True)
class WindowConfig:
    """The most recent episodes held out of the challenger's training: a number of weeks, else a share."""

    #: The most recent share of episodes, by time (used when `weeks` is null).
    share: float = _spec(0.15, low=0.0, high=0.5, low_open=True, high_open=True)
    #: The most recent N weeks (wins over `share` when set).
    weeks: int | None = _spec(None, low=1, high=520)


@dataclass(frozen=True)
class GateConfig:
    """What a challenger must show on the window to replace the champion."""

    window: WindowConfig = field(default_factory=WindowConfig)
    min_window_episodes: int = _spec(200, low=1, high=1_000_000_000)
    min_ndcg_vs_champion: float = _spec(0.98, low=0.0, high=10.0)
    max_stage_drop: float = _spec(0.05, low=0.0, high=1.0)
    min_stage_episodes: int = _spec(30, low=1, high=1_000_000_000)
    max_calibration_error: float = _spec(0.15, low=0.0, high=1.0)
    min_ndcg_vs_popularity: float = _spec(1.02, low=0.0, high=10.0)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return _to_plain(dataclasses.asdict(self))


def load_gate(path: str | Path | None = None) -> GateConfig:
    """The packaged gate defaults with the YAML at `path` (if any) merged over them; ConfigError naming the key."""
    text = (Path(__file__).resolve().parent / DEFAULT_GATE_FILE).read_text(encoding="utf-8")
    merged = yaml_text.load(text)
    where = "packaged default_gate.yaml"
    if path is not None:
        where = f"gate file {str(path)!r}"
        try:
            merged = _deep_merge(merged, _read_yaml(Path(path)))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("config file", "gate file")) from exc
    try:
        return _build(GateConfig, merged, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).replace('config key', 'gate key')}") from exc


def window_start(dates: np.ndarray, window: WindowConfig) -> np.datetime64:
    """First day of the held-out window over episode `dates` (datetime64[D]).

    `weeks`: the last N×7 days up to the newest episode. `share`: the distinct date where the share
    of episodes on or after it is nearest `share` (a date is never split). At least two distinct
    dates must remain before it (the challenger's train and validation splits); DataError otherwise.
    """
    days = np.asarray(dates).astype("datetime64[D]")
    uniq, counts = np.unique(days, return_counts=True)
    if len(uniq) < 3:
        raise DataError(f"retrain needs episodes on at least 3 distinct dates (2 to train on, 1 to hold out); "
                        f"found {len(uniq)}")
    if window.weeks is not None:
        where = int(np.searchsorted(uniq, uniq[-1] - np.timedelta64(7 * window.weeks - 1, "D")))
        start = uniq[min(where, len(uniq) - 1)]  # the first day with episodes in those weeks
        how = f"the last {window.weeks} week(s)"
    else:
        after = counts[::-1].cumsum()[::-1]  # after[i]: episodes on uniq[i] or later
        where = int(np.argmin(np.abs(after / counts.sum() - window.share)))
        where = max(where, 1)
        start = uniq[where]
        how = f"the most recent {window.share:g} of episodes"
    if where < 2:
        raise DataError(f"the held-out window ({how}) leaves {where} distinct date(s) before it; at least 2 are "
                        "needed to train the challenger: use fewer weeks or a smaller share in the gate file")
    return np.datetime64(start, "D")


@dataclass(frozen=True)
class Scores:
    """One method's figures on the window."""

    ndcg: float
    stages: dict[str, tuple[float, int]]  # stage → (NDCG@5, episodes with a positive outcome)
    calibration_error: float

    def to_dict(self) -> dict[str, Any]:
        return {
            f"ndcg@{K}": _round(self.ndcg),
            "calibration_error": _round(self.calibration_error),
            "stages": {s: {f"ndcg@{K}": _round(v), "episodes": n} for s, (v, n) in self.stages.items()},
        }


def score(
    y: np.ndarray, proba: np.ndarray, stages: np.ndarray, stage_codes: Sequence[str], calibration_mask: np.ndarray
) -> Scores:
    """NDCG@5 overall and per stage, and the calibration error over `calibration_mask` cells."""
    per_stage = {}
    for code in stage_codes:
        rows = stages == code
        n = int(((y[rows] > 0).sum(axis=1) > 0).sum())
        per_stage[code] = (metrics.ndcg_at_k(y[rows], proba[rows], K) if n else float("nan"), n)
    return Scores(
        ndcg=metrics.ndcg_at_k(y, proba, K),
        stages=per_stage,
        calibration_error=metrics.calibration_error(y, proba, calibration_mask),
    )


@dataclass(frozen=True)
class Check:
    """One gate rule's outcome: its key, pass/fail, the measured value, the limit, a short account."""

    key: str
    passed: bool
    value: float | None
    limit: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "passed": self.passed, "value": _round(self.value), "limit": self.limit,
                "text": self.text}


def decide(
    gate: GateConfig,
    *,
    window_episodes: int,
    challenger: Scores,
    champion: Scores | None,
    popularity: Scores,
) -> list[Check]:
    """Every check of the gate, in a fixed order (the champion checks are skipped without a champion)."""
    checks = [Check("min_window_episodes", window_episodes >= gate.min_window_episodes, window_episodes,
                    gate.min_window_episodes,
                    f"{window_episodes} window episodes with a positive outcome (need ≥ {gate.min_window_episodes})")]
    if champion is not None:
        ratio = _ratio(challenger.ndcg, champion.ndcg)
        checks.append(Check("min_ndcg_vs_champion", ratio >= gate.min_ndcg_vs_champion, ratio,
                            gate.min_ndcg_vs_champion,
                            f"ndcg@5 {challenger.ndcg:.4f} vs champion {champion.ndcg:.4f} = {ratio:.3f}x "
                            f"(need ≥ {gate.min_ndcg_vs_champion:g}x)"))
        worst: tuple[str, float] | None = None
        for stage, (value, n) in challenger.stages.items():
            base, n_base = champion.stages.get(stage, (float("nan"), 0))
            if min(n, n_base) < gate.min_stage_episodes or not base > 0 or math.isnan(value):
                continue
            drop = 1.0 - value / base
            if worst is None or drop > worst[1]:
                worst = (stage, drop)
        if worst is None:
            checks.append(Check("max_stage_drop", True, None, gate.max_stage_drop,
                                f"no stage has ≥ {gate.min_stage_episodes} window episodes to compare"))
        else:
            stage, drop = worst
            checks.append(Check("max_stage_drop", drop <= gate.max_stage_drop, drop, gate.max_stage_drop,
                                f"worst stage {stage}: ndcg@5 {-drop:+.1%} vs champion "
                                f"(allowed drop ≤ {gate.max_stage_drop:.0%})"))
    calibration = challenger.calibration_error
    checks.append(Check("max_calibration_error", calibration <= gate.max_calibration_error, calibration,
                        gate.max_calibration_error,
                        f"calibration error {calibration:.3f} (allowed ≤ {gate.max_calibration_error:g})"))
    lift = _ratio(challenger.ndcg, popularity.ndcg)
    checks.append(Check("min_ndcg_vs_popularity", lift >= gate.min_ndcg_vs_popularity, lift,
                        gate.min_ndcg_vs_popularity,
                        f"ndcg@5 {challenger.ndcg:.4f} vs popularity {popularity.ndcg:.4f} = {lift:.3f}x "
                        f"(need ≥ {gate.min_ndcg_vs_popularity:g}x)"))
    return checks


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b if b > 0 else (float("inf") if a > 0 else 1.0)


def _round(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 6)


def popularity(y_before: np.ndarray, n_rows: int, offered: np.ndarray) -> np.ndarray:
    """Each characteristic's positive rate over the episodes before the window, masked by the stage's offer."""
    rate = (np.asarray(y_before) > 0).mean(axis=0) if len(y_before) else np.zeros(offered.shape[1])
    return np.tile(rate.astype(np.float32), (n_rows, 1)) * offered

