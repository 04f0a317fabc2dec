"""Who to call about one characteristic at one stage: the audience ranking rule and its evaluation.

The reverse of a recommendation: for a characteristic C and a funnel stage S, rank the CRM's
contacts by the model's P(C resonates at S), best first. One rule (`rank`) is used by the HTTP
query (`GET /v1/audience`), the campaign-list command (`python -m serving.audience`) and the
evaluation of the training report (`audience_gain`), so all three agree:

- a contact whose organization already owns C's product is left out, except at the last funnel
  stage (retention: the firm talks to its own clients about what they already have);
- optionally, contacts C was presented to within the last N days are left out (no repeated pitch);
- filters: industry, region, and clients only / prospects only (`client_since` set or empty);
- a characteristic with no talking point at S is never offered there: asking for it is an error;
- ties in probability go to the smaller contact_id, so the list is deterministic.

`Population` holds what the rule needs about every contact as plain arrays (built once from the
validated CRM tables); `rank` is vectorised (a partial sort for the top `limit`), so 200k
contacts rank in a few milliseconds from a probability column scored beforehand.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from needs_rec import schema
from needs_rec.dictionaries import Dictionaries, normalize_code
from needs_rec.errors import RequestError, clipped, unknown_characteristic
from needs_rec.evaluation import gain_curve

CLIENTS_CHOICES = ("only", "exclude")
#: The shares of the ranked audience the evaluation reports (cumulative gain at 5 / 10 / 20%).
GAIN_SHARES = (0.05, 0.10, 0.20)


#: The longest look-back of `exclude_presented_days` (a century: longer than any CRM's history, and a
#: date arithmetic that never overflows).
MAX_EXCLUDE_DAYS = 36_500


@dataclass(frozen=True)
class Filters:
    """Optional narrowing of an audience: industry and region codes, clients only / prospects only,
    and leaving out contacts C was presented to within the last `exclude_presented_days` days."""

    industry: str | None = None
    region: str | None = None
    clients: str | None = None  # "only" | "exclude" | None
    exclude_presented_days: int | None = None

    def __post_init__(self) -> None:
        if self.clients is not None and self.clients not in CLIENTS_CHOICES:
            raise RequestError(f"field 'clients': {self.clients!r} is not allowed; use 'only' or 'exclude'")
        days = self.exclude_presented_days
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXCLUDE_DAYS
        ):
            raise RequestError(
                f"field 'exclude_presented_days': must be a whole number of days from 1 to {MAX_EXCLUDE_DAYS}; "
                f"received {days!r}"
            )


def filter_warnings(filters: Filters, dictionaries: Dictionaries) -> list[str]:
    """A warning per filter code that is not in its dictionary: the filter still applies (a CRM may
    hold codes outside the dictionaries), but an empty or short audience should say why."""
    found: list[str] = []
    for name, vocabulary in (("industry", "industries"), ("region", "regions")):
        value = getattr(filters, name)
        if value is not None and normalize_code(value) not in dictionaries.codes(vocabulary):
            shown = clipped(value)
            found.append(f"field '{name}': {shown!r} is not a code of {vocabulary}.yaml; only contacts whose "
                         f"organization has exactly this {name} are kept")
    return found


@dataclass(frozen=True)
class Population:
    """Every contact of a CRM with what the ranking rule needs, one array element per contact.

    Rows are in contact_id order (so a stable sort breaks probability ties by contact_id).
    `owns[p, i]`: contact i's organization owns product p (`products` order); `product_of[j]`:
    the product index of characteristic j. `presented` maps a characteristic code to two aligned
    arrays (contact row, last day it was presented, as datetime64[D]) for the recency filter.
    """

    contact_id: np.ndarray
    org_id: np.ndarray
    industry: np.ndarray
    region: np.ndarray
    is_client: np.ndarray
    owns: np.ndarray
    product_of: np.ndarray
    characteristic_codes: tuple[str, ...]
    stage_codes: tuple[str, ...]
    offered: np.ndarray  # bool (stages, characteristics)
    presented: Mapping[str, tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.contact_id)

    @classmethod
    def from_crm(cls, crm: schema.CrmData, dictionaries: Dictionaries) -> Population:
        """Build from validated CRM tables (`schema.validate`); outcomes feed the recency filter."""
        contacts = crm.contacts.sort_values("contact_id", kind="stable").reset_index(drop=True)
        orgs = crm.organizations
        pos = schema.lookup(contacts["org_id"], orgs["org_id"])
        products = dictionaries.codes("products")
        owned_lists = orgs["products_owned"].to_numpy().astype(str)
        owns_org = np.zeros((len(products), len(orgs)), dtype=bool)
        product_index = {code: i for i, code in enumerate(products)}
        for row, text in enumerate(owned_lists):
            for code in text.split(schema.MULTI_SEPARATOR) if text else ():
                if code in product_index:
                    owns_org[product_index[code], row] = True
        client = orgs["client_since"].notna().to_numpy()
        chars = dictionaries.characteristics
        outcomes = crm.outcomes
        presented: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if len(outcomes):
            rows = schema.lookup(outcomes["contact_id"], contacts["contact_id"])
            days = outcomes[schema.OCCURRED_ON].to_numpy().astype("datetime64[D]")
            last = (
                pd.DataFrame({"c": outcomes["characteristic"].to_numpy(), "r": rows, "d": days})
                .loc[rows >= 0]
                .groupby(["c", "r"], sort=True)["d"]
                .max()
            )
            for code, part in last.groupby(level=0):
                presented[str(code)] = (
                    part.index.get_level_values(1).to_numpy(dtype=np.int64),
                    part.to_numpy().astype("datetime64[D]"),
                )
        return cls(
            contact_id=contacts["contact_id"].to_numpy(dtype=object),
            org_id=contacts["org_id"].to_numpy(dtype=object),
            industry=orgs["industry"].to_numpy(dtype=object)[pos],
            region=orgs["region"].to_numpy(dtype=object)[pos],
            is_client=client[pos],
            owns=owns_org[:, pos],
            product_of=np.array([product_index[c.product] for c in chars], dtype=np.int64),
            characteristic_codes=tuple(c.code for c in chars),
            stage_codes=tuple(dictionaries.stage_codes),
            offered=dictionaries.offered(),
            presented=presented,
        )

    def model_inputs_keys(self, stage: str, on: dt.date) -> pd.DataFrame:
        """(contact_id, stage, occurred_on) keys to score every contact at `stage` as of `on`."""
        return pd.DataFrame(
            {"contact_id": self.contact_id, schema.STAGE: stage, schema.OCCURRED_ON: on.isoformat()}
        )

    def characteristic_index(self, code: str) -> int:
        """Output index of a characteristic code; RequestError naming the allowed codes otherwise."""
        norm = normalize_code(code or "")
        if norm in self.characteristic_codes:
            return self.characteristic_codes.index(norm)
        raise unknown_characteristic(code, self.characteristic_codes)

    def stage_index(self, code: str) -> int:
        """Funnel position of a stage code; RequestError naming the allowed stages otherwise."""
        norm = normalize_code(code or "")
        if norm in self.stage_codes:
            return self.stage_codes.index(norm)
        allowed = ", ".join(self.stage_codes)
        raise RequestError(f"field 'stage': unknown stage {clipped(str(code))!r}; allowed: {allowed}")


@dataclass(frozen=True)
class Audience:
    """A ranked audience: row indices into the population (best first), their probabilities, and
    `total`, the number of contacts that passed the rule (before `limit`)."""

    rows: np.ndarray
    probabilities: np.ndarray
    total: int

    def to_frame(self, population: Population) -> pd.DataFrame:
        """contact_id, org_id, probability, rank (1 = best) for the ranked rows."""
        return pd.DataFrame(
            {
                "contact_id": population.contact_id[self.rows],
                "org_id": population.org_id[self.rows],
                "probability": self.probabilities.astype(np.float32),
                "rank": np.arange(1, len(self.rows) + 1, dtype=np.int64),
            }
        )

    def to_json(self, population: Population) -> list[dict[str, Any]]:
        """The §8 `contacts` list."""
        ids, orgs = population.contact_id[self.rows], population.org_id[self.rows]
        return [
            {"contact_id": str(c), "org_id": str(o), "probability": round(float(p), 6), "rank": i + 1}
            for i, (c, o, p) in enumerate(zip(ids, orgs, self.probabilities, strict=True))
        ]


def eligible(
    population: Population, characteristic: int, stage: int, filters: Filters = Filters(), today: dt.date | None = None
) -> np.ndarray:
    """Boolean mask of the contacts the rule keeps for (characteristic, stage) under `filters`."""
    keep = np.ones(len(population), dtype=bool)
    if stage != len(population.stage_codes) - 1:  # before retention: owners of the product are left out
        keep &= ~population.owns[population.product_of[characteristic]]
    if filters.industry is not None:
        keep &= population.industry == normalize_code(filters.industry)
    if filters.region is not None:
        keep &= population.region == normalize_code(filters.region)
    if filters.clients == "only":
        keep &= population.is_client
    elif filters.clients == "exclude":
        keep &= ~population.is_client
    if filters.exclude_presented_days is not None:
        code = population.characteristic_codes[characteristic]
        rows, last = population.presented.get(code, (np.zeros(0, np.int64), np.zeros(0, "datetime64[D]")))
        since = np.datetime64(today or dt.date.today(), "D") - np.timedelta64(filters.exclude_presented_days, "D")
        keep[rows[last > since]] = False
    return keep


def rank(
    population: Population,
    probabilities: np.ndarray,
    characteristic: str,
    stage: str,
    *,
    filters: Filters = Filters(),
    limit: int | None = None,
    today: dt.date | None = None,
) -> Audience:
    """Rank the population for `characteristic` at `stage` (the one rule; see the module docstring).

    `probabilities` is either C's column, one value per contact (population order), or the whole
    (contacts, characteristics) matrix scored at `stage`. `limit` keeps the best N (None: all).
    """
    j = population.characteristic_index(characteristic)
    s = population.stage_index(stage)
    if not population.offered[s, j]:
        raise RequestError(
            f"field 'characteristic': {population.characteristic_codes[j]!r} has no talking point at stage "
            f"{population.stage_codes[s]!r}, so it is never offered there; choose another stage"
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise RequestError(f"field 'limit': must be a whole number >= 1; received {limit!r}")
    p = np.asarray(probabilities)
    column = p[:, j] if p.ndim == 2 else p
    if column.shape != (len(population),):
        raise ValueError(f"probabilities: expected {len(population)} values, received shape {p.shape}")
    rows = np.flatnonzero(eligible(population, j, s, filters, today))
    values = column[rows]
    order = top_order(values, limit)
    return Audience(rows=rows[order], probabilities=values[order], total=len(rows))


def top_order(values: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the `limit` largest values, largest first, ties to the lower index (all when None).

    A partial sort finds the limit-th value, then only the candidates at or above it are sorted,
    so a short list from 200k values costs a fraction of a full sort.
    """
    n = len(values)
    if limit is None or limit >= n:
        return np.argsort(-values, kind="stable")
    cut = np.partition(values, n - limit)[n - limit]
    candidates = np.flatnonzero(values >= cut)
    return candidates[np.argsort(-values[candidates], kind="stable")][:limit]


# --------------------------------------------------------------------------------------------
# evaluation


def audience_gain(
    y_test: np.ndarray,
    probas: Mapping[str, np.ndarray],
    stages: np.ndarray,
    owns_product: np.ndarray,
    stage_codes: Sequence[str],
    offered: np.ndarray,
    shares: Sequence[float] = GAIN_SHARES,
    min_positives: int = 5,
) -> dict[str, Any]:
    """Cumulative gain and lift of ranked audiences on the test split, per method.

    For every (characteristic C, stage S) with at least `min_positives` positives among the test
    episodes at S that the rule keeps (owners of C's product left out before the last stage, C
    offered at S), those episodes are ranked by each method's probability of C; the gain at share q
    is the share of C's positives found in the top q of that ranking (ties counted at their expected
    value, as `evaluation.gain_curve`). Figures are pooled over all such audiences (each positive
    counts once: the share of all positives found in the top q of its own audience) and also
    averaged per audience ("macro").
    `owns_product[i, j]`: episode i's organization owns characteristic j's product. Lift = gain / q.
    """
    y = np.asarray(y_test) > 0
    stages = np.asarray(stages).astype(str)
    owns = np.asarray(owns_product, dtype=bool)
    last = len(stage_codes) - 1
    grid = np.asarray(shares, dtype=np.float64)
    found = {m: np.zeros(len(shares)) for m in probas}
    macro: dict[str, list[np.ndarray]] = {m: [] for m in probas}
    audiences, positives_total, rows_total = 0, 0, 0
    for s, code in enumerate(stage_codes):
        at_stage = stages == code
        for j in range(y.shape[1]):
            if not offered[s, j]:
                continue
            keep = at_stage & (~owns[:, j] if s != last else True)
            positives = int(y[keep, j].sum())
            if positives < min_positives:
                continue
            audiences += 1
            positives_total += positives
            rows_total += int(keep.sum())
            for method, proba in probas.items():
                gains = gain_curve(y[keep, j], np.asarray(proba)[keep, j], grid)
                found[method] += gains * positives
                macro[method].append(gains)
    result: dict[str, Any] = {
        "shares": [float(q) for q in shares],
        "audiences": audiences,
        "positives": positives_total,
        "episodes": rows_total,
        "min_positives": min_positives,
        "methods": {},
    }
    for method in probas:
        pooled = found[method] / positives_total if positives_total else np.full(len(shares), math.nan)
        mean = np.mean(macro[method], axis=0) if macro[method] else np.full(len(shares), math.nan)
        result["methods"][method] = {
            "gain": [_round(v) for v in pooled],
            "lift": [_round(v / q) for v, q in zip(pooled, shares, strict=True)],
            "macro_gain": [_round(v) for v in mean],
        }
    return result


def _round(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def format_gain_table(gain: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """Plain-text table: one row per method, gain (lift) at each share."""
    shares = gain["shares"]
    header = ["method", *(f"top {q:.0%}" for q in shares)]
    rows = []
    for method, values in gain["methods"].items():
        pairs = zip(values["gain"], values["lift"], strict=True)
        cells = ["—" if g is None else f"{g:.1%} (×{lift:.2f})" for g, lift in pairs]
        rows.append([(names or {}).get(method, method), *cells])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines) + "\n"


def owns_product_matrix(products_owned: Sequence[str], dictionaries: Dictionaries) -> np.ndarray:
    """bool (rows, characteristics): the row's `;`-joined `products_owned` holds the characteristic's product."""
    products = [c.product for c in dictionaries.characteristics]
    codes, uniques = pd.factorize(pd.Series(list(products_owned), dtype="str").fillna(""))
    owned = np.array([[p in set(str(text).split(schema.MULTI_SEPARATOR)) for p in products] for text in uniques],
                     dtype=bool).reshape(-1, len(products))
    return owned[codes]


def score_stage(
    predict: Any, population: Population, crm: schema.CrmData, stage: str, on: dt.date, chunk: int = 65536
) -> np.ndarray:
    """Probabilities (contacts, characteristics) of every contact at `stage` as of `on`, in population order.

    `predict` takes the raw field arrays of `features.frame_to_inputs` (a LoadedModel's `predict`).
    """
    from needs_rec.episodes import model_inputs
    from needs_rec.features import frame_to_inputs

    inputs = frame_to_inputs(model_inputs(population.model_inputs_keys(stage, on), crm))
    parts = [
        np.asarray(predict({name: values[start : start + chunk] for name, values in inputs.items()}), dtype=np.float32)
        for start in range(0, len(population), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(population.characteristic_codes)), np.float32)
