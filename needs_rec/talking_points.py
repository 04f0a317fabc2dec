"""Talking points with reasons: what a manager says about each chosen characteristic, and why.

Two halves:

* `resonance_stats` runs at training time over the training episodes and keeps, per funnel stage
  and per (stage, position) and (stage, industry) group, how often each characteristic resonated
  on a base that means something for the kind of CRM: with explicit negatives, among the
  presentations (resonated when presented); in a positive-only CRM — where every recorded
  presentation is a positive, so that rate would always read 100% — among all conversations
  (episodes) of the group. Only aggregate counts of groups with at least `min_support` on the
  base are kept, so the manifest carries no personal data and no figure rests on a handful of
  episodes.
* `TalkingPoints` (built once per model version from its dictionaries and manifest) picks the
  characteristics to stress (`select`) and renders them (`render`) as the service's
  `talking_points` list: code, name, product, probability, the text for the stage (stage text,
  else `default`, else not offered at that stage) and short Russian reasons a manager can repeat —
  the contact's interests the characteristic answers (through the dictionaries' need links), a
  product the client already uses, how often it resonated with similar contacts *compared with the
  stage's average* (a lift; a rate is only given when it argues for the pick, never against it),
  and the inputs that raised the model's probability most for this contact (`factors`, computed
  by the caller with gradient × input on the served network, `needs_rec.fast_path.Twin.explain`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from needs_rec.dictionaries import Dictionaries, normalize_code
from needs_rec.errors import ModelError
from needs_rec.thresholds import select as select_rule
from needs_rec.thresholds import select_row

#: Aggregation levels of the resonance statistics, most specific first (the order reasons back off in).
GROUPS: tuple[tuple[str, str | None], ...] = (
    ("stage_position", "position"),
    ("stage_industry", "industry"),
    ("stage", None),
)
RESONANCE_FORMAT = 2
MAX_NEEDS_IN_REASON = 3
#: The bases of the resonance rates: presentations (explicit negatives) or conversations (positive-only).
BASE_PRESENTED = "presented"
BASE_CONVERSATIONS = "conversations"
#: A group's rate is a reason only when it is at least this many times the stage's rate, on at least
#: MIN_HITS positives: a reason must argue for the pick, never against it.
MIN_LIFT = 1.2
MIN_HITS = 3
#: Phrases of the model-based factors, by input field (the value's dictionary name follows in «»).
FACTOR_LABELS = {
    "position": "должность", "industry": "отрасль", "region": "регион", "department": "подразделение",
    "decision_role": "роль в решении", "legal_form": "форма собственности", "interests": "интерес",
    "products_owned": "уже пользуется",
}  # fmt: skip


# -- training side: aggregate statistics ---------------------------------------------------------


def resonance_stats(
    frame: pd.DataFrame,
    positives: np.ndarray,
    presented: np.ndarray,
    vocabulary: Sequence[str],
    min_support: int = 20,
    *,
    explicit_negatives: bool = True,
) -> dict[str, Any]:
    """Aggregate resonance counts per characteristic for stage, stage+position and stage+industry groups.

    `frame` holds one row per training episode with columns `stage`, `position`, `industry`;
    `positives` (n, C) marks characteristics with a positive outcome, `presented` (n, C) those put
    to the contact at all. The base of each rate: with `explicit_negatives` the presentations of
    the characteristic in the group; without (a positive-only CRM) the group's conversations
    (episodes). A (group, characteristic) cell is kept only when its base is at least
    `min_support` (and, below stage level, it resonated at least once). Returns a JSON-able dict:
    `{"format", "base", "min_support", "episodes", "stage": {stage: {char: [hits, base]}},
    "stage_position": {stage: {position: {char: [hits, base]}}}, "stage_industry": {...}}`.
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
    shown = presented.astype(np.int64) if explicit_negatives else np.ones_like(hits)
    codes = {
        c: frame[c].fillna("").astype(str).str.strip().str.lower().to_numpy() for c in ("stage", "position", "industry")
    }
    result: dict[str, Any] = {
        "format": RESONANCE_FORMAT,
        "base": BASE_PRESENTED if explicit_negatives else BASE_CONVERSATIONS,
        "min_support": int(min_support),
        "episodes": int(n),
    }
    for level, second in GROUPS:
        keys = [codes["stage"]] if second is None else [codes["stage"], codes[second]]
        result[level] = _aggregate(keys, hits, shown, vocabulary, min_support, need_hit=second is not None)
    return result


def _aggregate(
    keys: list[np.ndarray],
    hits: np.ndarray,
    shown: np.ndarray,
    vocabulary: list[str],
    min_support: int,
    need_hit: bool,
) -> dict[str, Any]:
    """Sum hits and bases per group key (vectorised) and nest the supported cells by key."""
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
    sum_hits = np.zeros((n_groups, hits.shape[1]))
    sum_shown = np.zeros((n_groups, hits.shape[1]))
    np.add.at(sum_hits, group_ids, hits)
    np.add.at(sum_shown, group_ids, shown)
    keep = (sum_shown >= min_support) & ((sum_hits > 0) if need_hit else True)
    for g, unique in enumerate(uniques):
        key = unique if isinstance(unique, tuple) else (unique,)
        cells = {vocabulary[j]: [int(sum_hits[g, j]), int(sum_shown[g, j])] for j in np.flatnonzero(keep[g])}
        if not cells:
            continue
        node = out
        for part in key[:-1]:
            node = node.setdefault(str(part), {})
        node[str(key[-1])] = cells
    return out


def _upgrade(resonance: Mapping[str, Any]) -> Mapping[str, Any]:
    """Format-1 statistics ([rate, presentations] cells) in the format-2 form ([hits, base], base presented)."""
    if not resonance or resonance.get("format", 1) >= 2:
        return resonance

    def convert(node: Any, depth: int) -> Any:
        if depth == 0:
            return {code: [round(float(cell[0]) * int(cell[1])), int(cell[1])] for code, cell in node.items()}
        return {key: convert(value, depth - 1) for key, value in node.items()}

    upgraded: dict[str, Any] = dict(resonance, format=2, base=BASE_PRESENTED)
    for level, second in GROUPS:
        if level in resonance:
            upgraded[level] = convert(resonance[level], 1 if second is None else 2)
    return upgraded


# -- serving side: selection and rendering -------------------------------------------------------


def _quote(name: str) -> str:
    return f"«{name}»"


def _presentations(n: int) -> str:
    """'из N презентаций' with the Russian genitive agreeing with N."""
    word = "презентации" if n % 10 == 1 and n % 100 != 11 else "презентаций"
    return f"из {n} {word}"


def _percent(rate: float) -> str:
    return f"{round(rate * 100):d}%"


def _conversations(n: int) -> str:
    """'из N разговоров' with the genitive agreeing with N, thousands spaced."""
    word = "разговора" if n % 10 == 1 and n % 100 != 11 else "разговоров"
    return f"из {n:,} {word}".replace(",", "\u00a0")


def times(lift: float) -> str:
    """'1,8 раза' / '2 раза' / '5 раз' (Russian decimal comma)."""
    value = round(lift, 1)
    if value.is_integer():
        n = int(value)
        word = "раза" if n % 10 in (2, 3, 4) and n % 100 not in (12, 13, 14) else "раз"
        return f"{n} {word}"
    return f"{value:.1f}".replace(".", ",") + " раза"


def russian_number(value: float) -> str:
    """104.7 → «104,7», 2500 → «2 500», 1e6 → «1 000 000»: a decimal comma, thousands spaced by a
    no-break space, at most one decimal, never an exponent (what `:g` wrote: «104.7», «1e+06»)."""
    rounded = round(float(value), 1)
    text = f"{int(rounded):,d}" if rounded.is_integer() else f"{rounded:,.1f}"
    return text.replace(",", "\u00a0").replace(".", ",")


def _number_phrase(field: str, value: float | None) -> str:
    known = value is not None and value == value
    if field == "employees":
        return f"численность {int(value)} чел." if known else "численность сотрудников"
    if field == "revenue_mln":
        return f"выручка {russian_number(value)} млн ₽" if known else "выручка"
    if field == "founded_year":
        return f"год основания {int(value)}" if known else "год основания"
    return f"клиент с {int(value)} года" if known else "срок работы с нами"


#: The reason given when nothing more specific argues for the pick.
GENERIC_REASON = "Модель ставит эту характеристику высоко для клиентов с похожим профилем"


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
        self.resonance: Mapping[str, Any] = _upgrade(resonance or {})
        self._explicit = self.resonance.get("base", BASE_PRESENTED) == BASE_PRESENTED
        self._stage_mean = {stage: self._mean_rate(stage) for stage in self.stages}
        self._field_names: dict[str, dict[str, str]] = {
            "position": self._position_names,
            "industry": self._industry_names,
            "region": {item.code: item.name for item in dictionaries.regions},
            "department": {item.code: item.name for item in dictionaries.departments},
            "decision_role": {item.code: item.name for item in dictionaries.decision_roles},
            "legal_form": {item.code: item.name for item in dictionaries.legal_forms},
            "interests": self._need_names,
            "products_owned": self._product_names,
        }
        self._cache: dict[tuple[str, str, str, int], list[str]] = {}
        # «должность «Главный бухгалтер»» for every (field, code) a code factor can name, phrased once
        self._code_phrases: dict[tuple[str, str], str] = {
            (field, code): f"{label} {_quote(name)}"
            for field, label in FACTOR_LABELS.items()
            for code, name in self._field_names[field].items()
        }

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
        min_selected: int = 0,
    ) -> np.ndarray:
        """Indices of the characteristics to show, most probable first.

        Without `top_k` (the request's): those the model's selection rule picks
        (`needs_rec.thresholds.select`: offered at `stage`, passing the cut, capped at `cap` — the
        manifest's top_k — and at least `min_selected`), the same rule batch and evaluation apply.
        With `top_k`: the caller asked for that many, so the `top_k` most probable offered ones,
        whether or not they pass the cut (`selected` in the answer tells which do).
        """
        p = np.asarray(probabilities, dtype=np.float64)
        offered = self._offered[stage]
        if top_k is None:
            picked = select_row(p, thresholds, top_k=cap, min_selected=min_selected, offered=offered)
            if picked is not None:  # already most probable first
                return np.asarray(picked, dtype=np.intp)
            mask = select_rule(p[None, :], thresholds, top_k=cap, min_selected=min_selected, offered=offered)[0]
        else:
            mask = offered
        candidates = np.flatnonzero(mask)
        order = candidates[np.argsort(-p[candidates], kind="stable")]
        return order if top_k is None else order[:top_k]

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self,
        probabilities: np.ndarray,
        chosen: Sequence[int] | np.ndarray,
        *,
        stage: str,
        picked: Collection[int] | None = None,
        position: str = "",
        industry: str = "",
        interests: Collection[str] = (),
        products_owned: Collection[str] = (),
        factors: Mapping[int, Sequence[Any]] | None = None,
        numbers: Mapping[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """The `talking_points` list (contract §4) for the `chosen` indices, in the given order.

        `selected` (an extension of the contract's fields) says whether the characteristic is one the
        version's selection rule `picked` (the cut, the top_k cap, the min_selected floor: what batch's
        `selected` says too); it is omitted when `picked` is not given. `factors` (characteristic index
        → `needs_rec.fast_path.Factor` list, from `Twin.explain`) adds the model's reason;
        `numbers` holds the contact's raw numbers (employees, revenue_mln, founded_year,
        client_since year) to phrase number factors with.
        """
        texts = self._texts[stage]
        interest_set = frozenset(interests)
        owned = frozenset(products_owned)
        chosen_by_rule = None if picked is None else frozenset(int(j) for j in picked)
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
            if factors and factors.get(j):
                point["reasons"] = [*point["reasons"][:3], self.factor_reason(factors[j], numbers or {})]
                if point["reasons"][0] == GENERIC_REASON:
                    point["reasons"].pop(0)
            if chosen_by_rule is not None:
                point["selected"] = j in chosen_by_rule
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
        if product in owned and stage == self.last_stage:  # before it an owned product argues against a resale
            reasons.append(f"Клиент уже пользуется {_quote(self._product_names.get(product, product))}")
        reasons.extend(self._resonance_reasons(j, stage, position, industry))
        if not reasons:
            reasons.append(GENERIC_REASON)
        return reasons

    def factor_reason(self, factors: Sequence[Any], numbers: Mapping[str, float]) -> str:
        """«Модель: выше всего вероятность подняли …» from the inputs that raised it most, by dictionary names."""
        parts = []
        for factor in factors:
            phrase = self._code_phrases.get((factor.field, factor.code))
            if phrase is None:
                label = FACTOR_LABELS.get(factor.field)
                if label is not None:  # a code the dictionaries do not name: its code
                    phrase = f"{label} {_quote(factor.code)}"
                else:
                    phrase = _number_phrase(factor.field, numbers.get(factor.field))
            parts.append(phrase)
        return "Модель: выше всего вероятность для этого контакта подняли " + ", ".join(parts)

    @property
    def explicit_negatives(self) -> bool:
        """True when the training CRM recorded explicit negatives: a probability then means "resonates
        when presented"; without them, "resonates in a conversation at the stage" (see `stage_rate`)."""
        return self._explicit

    def stage_rate(self, code: str, stage: str) -> float | None:
        """The share of the stage's conversations where `code` resonated (else the stage's average
        characteristic): what a positive-only CRM's probability is compared with, since on its own a
        probability of 12 % reads «low» even for the best pick of a stage where 4 % is usual. None
        when the training data say nothing about the stage."""
        cell = self._cell("stage", stage, None, normalize_code(code))
        if cell is not None and cell[0] > 0:
            return cell[0] / cell[1]
        return self._stage_mean.get(stage) or None

    def _mean_rate(self, stage: str) -> float | None:
        """The stage's average rate over the characteristics offered there (the reference of stage-level reasons)."""
        node = self.resonance.get("stage", {}).get(stage) or {}
        rates = [hits / base for hits, base in node.values() if base > 0]
        return float(np.mean(rates)) if rates else None

    def _resonance_reasons(self, j: int, stage: str, position: str, industry: str) -> list[str]:
        """Group rates that argue for the pick: at least MIN_LIFT × the stage's rate of the characteristic.

        Falls back to the stage's own rate when it is at least MIN_LIFT × the stage's average
        characteristic. Nothing is said when no figure argues for the pick.
        """
        key = (stage, position, industry, j)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        code = self.vocabulary[j]
        stage_name = _quote(self._stage_names.get(stage, stage))
        found: list[str] = []
        reference = self._cell("stage", stage, None, code)
        if reference is not None and reference[0] > 0:
            ref_rate = reference[0] / reference[1]
            for level, value, names, who in (
                ("stage_position", position, self._position_names, "с должностью"),
                ("stage_industry", industry, self._industry_names, "из отрасли"),
            ):
                cell = self._cell(level, stage, value, code)
                if cell is None or cell[0] < MIN_HITS or cell[0] / cell[1] < MIN_LIFT * ref_rate:
                    continue
                group = f"{who} {_quote(names.get(value, value))}"
                found.append(self._rate_text(cell, ref_rate, group, stage_name, "в среднем на этапе"))
        if not found and reference is not None and reference[0] >= MIN_HITS:
            mean = self._stage_mean.get(stage)
            if mean and reference[0] / reference[1] >= MIN_LIFT * mean:
                found.append(self._rate_text(reference, mean, "", stage_name, "у средней характеристики этапа"))
        if len(self._cache) < 100_000:  # bounded: keys are dictionary codes, not free text
            self._cache[key] = found
        return found

    def _rate_text(self, cell: tuple[int, int], reference: float, group: str, stage_name: str, against: str) -> str:
        """One rate reason: `group` is "с должностью «…»", "из отрасли «…»" or "" (the whole stage)."""
        hits, base = cell
        rate = hits / base
        if self._explicit:  # resonated when presented, against the reference rate
            who = f"контактов {group}" if group else "контактов"
            return (f"Отозвалось у {_percent(rate)} {who} на этапе {stage_name}, когда это предлагали "
                    f"({_presentations(base)}); {against} — {_percent(reference)}")  # fmt: skip
        with_whom = f" с контактами {group}" if group else ""
        return (f"Отозвалось в {_percent(rate)} разговоров на этапе {stage_name}{with_whom} "
                f"({_conversations(base)}) — в {times(rate / reference)} чаще, чем {against}")

    def _cell(self, level: str, stage: str, second: str | None, code: str) -> tuple[int, int] | None:
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
        if not cell or int(cell[1]) <= 0:
            return None
        return int(cell[0]), int(cell[1])


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
    picked = chosen if top_k is None else talking.select(probabilities, thresholds, stage, cap=cap)
    return talking.render(
        probabilities,
        chosen,
        stage=stage,
        picked=picked,
        position=position,
        industry=industry,
        interests=interests,
        products_owned=products_owned,
    )
