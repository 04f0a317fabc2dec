"""Talking points with reasons: what a manager says about each chosen characteristic, and why.

Two halves:

* `resonance_stats` runs at training time over the training episodes and keeps, per funnel stage
  and per (stage, position) and (stage, industry) group, how often each characteristic resonated
  when it was presented (rate = presented and positive / presented). Only aggregate counts of
  groups with at least `min_support` presentations are kept, so the manifest carries no personal
  data and no figure rests on a handful of episodes.
* `TalkingPoints` (built once per model version from its dictionaries and manifest) picks the
  characteristics to stress (`select`) and renders them (`render`) as the service's
  `talking_points` list: code, name, product, probability, the text for the stage (stage text,
  else `default`, else not offered at that stage) and short Russian reasons a manager can repeat —
  the contact's interests the characteristic answers (through the dictionaries' need links), a
  product the client already uses, and how often it resonated with similar contacts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from needs_rec.dictionaries import Dictionaries, normalize_code
from needs_rec.errors import ModelError

#: Aggregation levels of the resonance statistics, most specific first (the order reasons back off in).
GROUPS: tuple[tuple[str, str | None], ...] = (
    ("stage_position", "position"),
    ("stage_industry", "industry"),
    ("stage", None),
)
RESONANCE_FORMAT = 1
MAX_NEEDS_IN_REASON = 3


# -- training side: aggregate statistics ---------------------------------------------------------


def resonance_stats(
    frame: pd.DataFrame,
    positives: np.ndarray,
    presented: np.ndarray,
    vocabulary: Sequence[str],
    min_support: int = 20,
) -> dict[str, Any]:
    """Aggregate positive rates per characteristic for stage, stage+position and stage+industry groups.

    `frame` holds one row per training episode with columns `stage`, `position`, `industry`;
    `positives` (n, C) marks characteristics with a positive outcome, `presented` (n, C) those put
    to the contact at all. A (group, characteristic) cell is kept only when the characteristic was
    presented at least `min_support` times in that group. Returns a JSON-able dict:
    `{"format", "min_support", "episodes", "stage": {stage: {char: [rate, presented]}},
    "stage_position": {stage: {position: {char: [rate, presented]}}}, "stage_industry": {...}}`.
    """
    n = len(frame)
    vocabulary = list(vocabulary)
    positives = np.asarray(positives)
    presented = np.asarray(presented).astype(bool)
    for name, array in (("positives", positives), ("presented", presented)):
        if array.shape != (n, len(vocabulary)):
            raise ValueError(
                f"resonance_stats: {name} has shape {array.shape}; expected ({n}, {len(vocabulary)}) "
                "(one row per episode, one column per characteristic)"
            )
    missing = [c for c in ("stage", "position", "industry") if c not in frame.columns]
    if missing:
        raise ValueError(f"resonance_stats: frame lacks column(s) {missing}; expected stage, position, industry")
    if min_support < 1:
        raise ValueError(f"resonance_stats: min_support must be >= 1, got {min_support}")

    hits = (positives.astype(bool) & presented).astype(np.int64)
    shown = presented.astype(np.int64)
    codes = {
        c: frame[c].fillna("").astype(str).str.strip().str.lower().to_numpy() for c in ("stage", "position", "industry")
    }
    result: dict[str, Any] = {"format": RESONANCE_FORMAT, "min_support": int(min_support), "episodes": int(n)}
    for level, second in GROUPS:
        keys = [codes["stage"]] if second is None else [codes["stage"], codes[second]]
        result[level] = _aggregate(keys, hits, shown, vocabulary, min_support)
    return result


def _aggregate(
    keys: list[np.ndarray], hits: np.ndarray, shown: np.ndarray, vocabulary: list[str], min_support: int
) -> dict[str, Any]:
    """Sum hits and presentations per group key (vectorised) and nest the supported cells by key."""
    out: dict[str, Any] = {}
    if len(hits) == 0:
        return out
    valid = np.ones(len(hits), dtype=bool)
    for column in keys:
        valid &= column != ""
    group_frame = pd.DataFrame({f"k{i}": key[valid] for i, key in enumerate(keys)})
    group_ids, uniques = pd.MultiIndex.from_frame(group_frame).factorize()
    n_groups = len(uniques)
    if n_groups == 0:
        return out
    hits, shown = hits[valid], shown[valid]
    columns = range(hits.shape[1])
    sum_hits = np.stack([np.bincount(group_ids, weights=hits[:, j], minlength=n_groups) for j in columns], 1)
    sum_shown = np.stack([np.bincount(group_ids, weights=shown[:, j], minlength=n_groups) for j in columns], 1)
    for g, unique in enumerate(uniques):
        key = unique if isinstance(unique, tuple) else (unique,)
        cells = {
            vocabulary[j]: [round(float(sum_hits[g, j] / sum_shown[g, j]), 4), int(sum_shown[g, j])]
            for j in np.flatnonzero(sum_shown[g] >= min_support)
        }
        if not cells:
            continue
        node = out
        for part in key[:-1]:
            node = node.setdefault(str(part), {})
        node[str(key[-1])] = cells
    return out


# -- serving side: selection and rendering -------------------------------------------------------


def _quote(name: str) -> str:
    return f"«{name}»"


def _presentations(n: int) -> str:
    """'из N презентаций' with the Russian genitive agreeing with N."""
    word = "презентации" if n % 10 == 1 and n % 100 != 11 else "презентаций"
    return f"из {n} {word}"


def _percent(rate: float) -> str:
    return f"{round(rate * 100):d}%"


class TalkingPoints:
    """Selection and rendering for one model version: its dictionaries, vocabulary and resonance statistics.

    Built once per loaded version; `select` and `render` are then cheap per request (texts and
    names are looked up in prepared tables, the stage's offer mask is precomputed).
    """

    def __init__(
        self,
        dictionaries: Dictionaries,
        vocabulary: Sequence[str],
        resonance: Mapping[str, Any] | None = None,
    ):
        self.vocabulary = [normalize_code(c) for c in vocabulary]
        by_code = {ch.code: ch for ch in dictionaries.characteristics}
        unknown = [c for c in self.vocabulary if c not in by_code]
        if unknown:
            raise ModelError(
                f"model vocabulary has characteristic(s) missing from characteristics.yaml: {unknown[:5]}"
            )
        self.characteristics = [by_code[c] for c in self.vocabulary]
        self.stages = dictionaries.stage_codes
        self.last_stage = self.stages[-1]
        self._stage_names = {item.code: item.name for item in dictionaries.funnel_stages}
        self._position_names = {item.code: item.name for item in dictionaries.positions}
        self._industry_names = {item.code: item.name for item in dictionaries.industries}
        self._product_names = {item.code: item.name for item in dictionaries.products}
        self._need_names = dictionaries.need_names()
        self._char_needs = [frozenset(ch.needs) for ch in self.characteristics]
        self._char_need_order = [ch.needs for ch in self.characteristics]
        self._texts: dict[str, list[str | None]] = {
            stage: [ch.talking_point(stage) for ch in self.characteristics] for stage in self.stages
        }
        self._offered = {stage: np.array([t is not None for t in texts]) for stage, texts in self._texts.items()}
        self.resonance: Mapping[str, Any] = resonance or {}
        self._cache: dict[tuple[str, str, str, int], list[str]] = {}

    # -- selection ---------------------------------------------------------------------------

    def offered(self, stage: str) -> np.ndarray:
        """Boolean mask (C,): characteristics with a talking point (own or `default`) at `stage`."""
        return self._offered[stage]

    def select(
        self,
        probabilities: np.ndarray,
        thresholds: np.ndarray,
        stage: str,
        top_k: int | None = None,
        cap: int | None = None,
    ) -> np.ndarray:
        """Indices of the characteristics to stress, most probable first.

        Characteristics not offered at `stage` are never chosen. With `top_k` (the request's) the
        `top_k` most probable offered ones are returned, whether or not they pass their cut; without
        it, every offered one passing its threshold, capped at `cap` (the manifest's top_k) if given.
        """
        p = np.asarray(probabilities)
        mask = self._offered[stage]
        if top_k is None:
            mask = mask & (p >= thresholds)
        candidates = np.flatnonzero(mask)
        order = candidates[np.argsort(-p[candidates], kind="stable")]
        limit = top_k if top_k is not None else cap
        return order if limit is None else order[:limit]

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self,
        probabilities: np.ndarray,
        chosen: Sequence[int] | np.ndarray,
        *,
        stage: str,
        thresholds: np.ndarray | None = None,
        position: str = "",
        industry: str = "",
        interests: Collection[str] = (),
        products_owned: Collection[str] = (),
    ) -> list[dict[str, Any]]:
        """The `talking_points` list (contract §4) for the `chosen` indices, in the given order.

        `selected` (an extension of the contract's fields) says whether the characteristic passes
        its threshold; it is omitted when no thresholds are given.
        """
        texts = self._texts[stage]
        interest_set = frozenset(interests)
        owned = frozenset(products_owned)
        points = []
        for j in chosen:
            j = int(j)
            ch = self.characteristics[j]
            text = texts[j]
            if text is None:  # not offered at this stage: never rendered
                continue
            prob = float(probabilities[j])
            point: dict[str, Any] = {
                "characteristic": ch.code,
                "name": ch.name,
                "product": ch.product,
                "probability": round(prob, 4),
                "text": text,
                "reasons": self.reasons(j, stage, position, industry, interest_set, owned),
            }
            if thresholds is not None:
                point["selected"] = bool(prob >= thresholds[j])
            points.append(point)
        return points

    def reasons(
        self,
        j: int,
        stage: str,
        position: str,
        industry: str,
        interests: frozenset[str],
        owned: frozenset[str],
    ) -> list[str]:
        """Short Russian reasons for characteristic `j`: matching interests, owned product, resonance."""
        reasons: list[str] = []
        matched = [n for n in self._char_need_order[j] if n in interests] if interests else []
        if matched:
            names = ", ".join(_quote(self._need_names[n]) for n in matched[:MAX_NEEDS_IN_REASON])
            more = len(matched) - MAX_NEEDS_IN_REASON
            tail = f" и ещё {more}" if more > 0 else ""
            label = "интерес" if len(matched) == 1 else "интересы"
            reasons.append(f"Отвечает на {label} контакта: {names}{tail}")
        product = self.characteristics[j].product
        if product in owned:
            prefix = "Клиент уже пользуется" if stage == self.last_stage else "Организация уже пользуется"
            reasons.append(f"{prefix} {_quote(self._product_names.get(product, product))}")
        reasons.extend(self._resonance_reasons(j, stage, position, industry))
        if not reasons:
            reasons.append("Модель ставит эту характеристику высоко для клиентов с похожим профилем")
        return reasons

    def _resonance_reasons(self, j: int, stage: str, position: str, industry: str) -> list[str]:
        key = (stage, position, industry, j)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        code = self.vocabulary[j]
        stage_name = _quote(self._stage_names.get(stage, stage))
        found: list[str] = []
        cell = self._cell("stage_position", stage, position, code)
        if cell is not None:
            who = f"контактов с должностью {_quote(self._position_names.get(position, position))}"
            found.append(f"Отозвалось у {_percent(cell[0])} {who} на этапе {stage_name} ({_presentations(cell[1])})")
        cell = self._cell("stage_industry", stage, industry, code)
        if cell is not None:
            who = f"контактов из отрасли {_quote(self._industry_names.get(industry, industry))}"
            found.append(f"Отозвалось у {_percent(cell[0])} {who} на этапе {stage_name} ({_presentations(cell[1])})")
        if not found:
            cell = self._cell("stage", stage, None, code)
            if cell is not None:
                rate, support = _percent(cell[0]), _presentations(cell[1])
                found.append(f"Отозвалось у {rate} контактов на этапе {stage_name} ({support})")
        if len(self._cache) < 100_000:  # bounded: keys are dictionary codes, not free text
            self._cache[key] = found
        return found

    def _cell(self, level: str, stage: str, second: str | None, code: str) -> tuple[float, int] | None:
        node: Any = self.resonance.get(level, {}).get(stage)
        if node is None:
            return None
        if second is not None:
            if not second:
                return None
            node = node.get(second)
            if node is None:
                return None
        cell = node.get(code)
        if not cell:
            return None
        return float(cell[0]), int(cell[1])


def render(
    probabilities: np.ndarray,
    thresholds: np.ndarray,
    *,
    stage: str,
    dictionaries: Dictionaries,
    vocabulary: Sequence[str],
    resonance: Mapping[str, Any] | None = None,
    top_k: int | None = None,
    cap: int | None = None,
    position: str = "",
    industry: str = "",
    interests: Collection[str] = (),
    products_owned: Collection[str] = (),
) -> list[dict[str, Any]]:
    """One-shot `select` + `render` (builds a `TalkingPoints`; the service keeps one per version instead)."""
    talking = TalkingPoints(dictionaries, vocabulary, resonance)
    chosen = talking.select(probabilities, thresholds, stage, top_k=top_k, cap=cap)
    return talking.render(
        probabilities,
        chosen,
        stage=stage,
        thresholds=thresholds,
        position=position,
        industry=industry,
        interests=interests,
        products_owned=products_owned,
    )
