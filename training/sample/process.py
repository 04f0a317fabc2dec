"""The generating process of the synthetic CRM (docs/sample-generator.md): the fixed parameters, the
firm shapes, and the draws of the world, the population, the journeys and the outcomes, as index
arrays. Nothing here is text: `training.sample.render` writes what these draws mean as a CRM export."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from needs_rec.dictionaries import Dictionaries
from needs_rec.errors import ConfigError

DEFAULT_DICTIONARIES = Path(__file__).resolve().parents[2] / "dictionaries"
DEFAULT_ORGS = 1500
DEFAULT_SEED = 42
MAX_ORGS = 2_000_000
ORACLE_FILE = "oracle.parquet"
README_FILE = "README.md"
GENERATOR_VERSION = 2  # 2: relationships span the years (retention talks, new journeys, late contacts)

# ---- the process's fixed parameters (docs/sample-generator.md explains each) -----------------------
START, END = np.datetime64("2020-01-01", "D"), np.datetime64("2025-12-31", "D")
WINDOW_DAYS = int((END - START).astype(int)) + 1
MICRO_SHARE = 0.12  # organizations with 0..5 employees
SIZE_SD = 1.5  # log-normal spread of employees around the industry's typical size
PROSPECT_BASE = 0.4  # share of prospects (no client_since, no products)
OWNED_COUNT_P = (0.15, 0.45, 0.28, 0.12)  # a client owns 0, 1, 2, 3 products
MAX_INTERESTS = 5
INTEREST_COUNT_P = (0.14, 0.22, 0.26, 0.2, 0.11, 0.07)  # a contact shows 0..5 interests
JOURNEY_MEAN = 2.8  # stages reached per journey (a contact may make several journeys)
CONTACT_START_DAYS = 45.0  # mean delay from an organization's entry to a contact's first episode
LATE_CONTACT_SHARE = 0.6  # contacts other than the first one who join the relationship later
LATE_CONTACT_DAYS = 730.0  # their mean delay after the organization's entry
STAGE_GAP_DAYS = 40.0  # mean gap between consecutive stages (plus 3 days minimum)
# the relationship after a journey (docs/sample-generator.md, "Relationships over the years")
CLIENT_KEEP = 0.75  # a client's contact comes back again (else the relationship with this contact ends)
RETENTION_GAP_DAYS = (180, 540)  # from one last-stage (retention) talk to the next, uniform
UPSELL_SHARE = 0.15  # a client's next talk is a new journey (first stage again) instead of retention
PROSPECT_RETURN = 0.1  # a prospect's contact who left the funnel starts over later
NEW_JOURNEY_DAYS = (365.0, 240.0)  # a new journey starts ≥ 1 year after the previous talk: min + exp(mean)
PRESENTED_MIN, PRESENTED_MAX = 6, 12  # characteristics presented per episode (uniform count)
TARGET_POSITIVES = 3.0  # calibrated mean number of positives per episode
REFERENCE_ORGS = 1500  # size of the population the offset is calibrated on (fixed: world ≠ f(n_orgs))
RARE_SHARE = 0.1  # share of characteristics made rare
NEED_MATCH = (1.5, 2.5)  # logit gain per interest the characteristic answers (uniform per need)
OWNED_EARLY, OWNED_LAST = -3.0, 2.5  # owned product: do not resell before the last stage; retain at it
INTERACTION_SHARE = 0.2  # industry × position pairs with a strong boost to one need category
INTERACTION_GAIN = (2.0, 3.5)
SIZE_STEP_SHARE = 0.6  # products with an employee-threshold step
SIZE_STEP_GAIN = (1.5, 3.0)
MESSY_CODE_RATE = 0.03  # codes written with odd case or surrounding spaces
MISSING_RATE = MappingProxyType(
    {
        "region": 0.03,
        "employees": 0.04,
        "revenue_mln": 0.06,
        "legal_form": 0.03,
        "founded_year": 0.05,
        "department": 0.05,
        "decision_role": 0.06,
        "email": 0.1,
        "phone": 0.08,
    }
)
_EPISODE_CHUNK = 20_000


@dataclass(frozen=True)
class Shape:
    """How one firm's CRM differs from another's: the knobs of the latent model and of what is recorded.

    The default values are the bundled firm's process (the constants above); `SHAPES` names the
    firm shapes the quality bench runs. Everything else (vocabulary sizes, stages, which
    characteristic is offered where) comes from the dictionaries, so a shape plus a set of
    dictionaries is one firm. The default shape draws exactly the random numbers it always did, so
    the bundled sample keeps its bytes.
    """

    name: str = "bundled"
    #: Write `negative` rows (presented, did not resonate); False: a positive-only CRM.
    negatives: bool = True
    #: Share of characteristics made rare, and the mean of their base logit (≈ −6: well under 1%).
    rare_share: float = RARE_SHARE
    rare_base: float = -6.0
    #: Industry × position boosts: share of boosted pairs and the gain range (see `interaction_groups`).
    interaction_share: float = INTERACTION_SHARE
    interaction_gain: tuple[float, float] = INTERACTION_GAIN
    #: None: the pairs are single (industry, position) cells. (a, b): industries fall into `a`
    #: groups and positions into `b` groups, and a boost applies to every pair of a boosted
    #: (industry group, position group): fewer, broader interactions a model can learn from data.
    interaction_groups: tuple[int, int] | None = None
    #: Share of products with an employee-size step, and the logit drop on the wrong side of it.
    size_step_share: float = SIZE_STEP_SHARE
    size_step_gain: tuple[float, float] = SIZE_STEP_GAIN
    #: Logit of an owned product's characteristics before the last stage (do not resell) and at it (retain).
    owned_early: float = OWNED_EARLY
    owned_last: float = OWNED_LAST
    #: Calibrated mean number of positives per episode.
    target_positives: float = TARGET_POSITIVES
    #: Fewest and most characteristics a manager presents in one episode (uniform count).
    presented: tuple[int, int] = (PRESENTED_MIN, PRESENTED_MAX)

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


#: The firm shapes of the quality bench (docs/sample-generator.md, "Firm shapes").
SHAPES: Mapping[str, Shape] = MappingProxyType(
    {
        # the repo's firm as the bundled sample is made: explicit negatives recorded
        "bundled": Shape(),
        # the same process where the CRM logs only what worked (like firm A of issue 12)
        "positive_only": Shape(name="positive_only", negatives=False),
        # like firm B of issue 12: positive-only, many rare characteristics (~0.5% base rate),
        # broad industry-group × position-group interactions, strong size steps and owned products
        "b_like": Shape(
            name="b_like",
            negatives=False,
            rare_share=0.2,
            rare_base=-3.0,
            interaction_share=0.35,
            interaction_gain=(2.0, 3.5),
            interaction_groups=(5, 4),
            size_step_share=0.7,
            size_step_gain=(2.0, 3.0),
            owned_early=-3.0,
            owned_last=2.5,
            # managers present more of a large catalogue per conversation (and more resonate), so the
            # label says more than which few happened to be presented
            presented=(20, 40),
            target_positives=6.0,
        ),
    }
)


def shape_named(name: str) -> Shape:
    """The shape called `name`; ConfigError listing the known ones otherwise."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ConfigError(f"shape: unknown firm shape {name!r}; known: {', '.join(SHAPES)}") from None


# ---- vocabularies as index arrays -------------------------------------------------------------------
@dataclass(frozen=True)
class _Vocab:
    """The dictionaries as codes and index arrays: everything the process reads from them."""

    industries: list[str]
    regions: list[str]
    positions: list[str]
    departments: list[str]
    decision_roles: list[str]
    legal_forms: list[str]
    products: list[str]
    stages: list[str]
    categories: list[str]
    needs: list[str]
    need_category: np.ndarray  # (N,) category index of each need
    chars: list[str]
    char_product: np.ndarray  # (C,) product index of each characteristic
    answers: np.ndarray  # (N, C) 1.0 where characteristic c answers need n
    char_needs_category: np.ndarray  # (C, G) count of the needs of each category a characteristic answers
    offered: np.ndarray  # (S, C) bool: has a talking point at the stage
    presented_lo: np.ndarray  # (S,) fewest characteristics presented at the stage
    presented_hi: np.ndarray  # (S,) most
    presentation: np.ndarray  # (S, C) P(presented)

    @classmethod
    def of(cls, d: Dictionaries, presented: tuple[int, int] = (PRESENTED_MIN, PRESENTED_MAX)) -> _Vocab:
        categories = d.codes("need_categories")
        cat_index = {c: g for g, c in enumerate(categories)}
        needs = [n.code for n in d.needs]
        need_index = {n: i for i, n in enumerate(needs)}
        products = d.codes("products")
        prod_index = {p: k for k, p in enumerate(products)}
        stages = d.stage_codes
        chars = d.characteristic_codes
        answers = np.zeros((len(needs), len(chars)))
        for c, ch in enumerate(d.characteristics):
            for n in ch.needs:
                answers[need_index[n], c] = 1.0
        need_category = np.array([cat_index[n.category] for n in d.needs], dtype=np.int64)
        char_needs_category = np.zeros((len(chars), len(categories)))
        for c in range(len(chars)):
            np.add.at(char_needs_category[c], need_category[answers[:, c] > 0], 1.0)
        offered = np.array([[ch.talking_point(s) is not None for ch in d.characteristics] for s in stages], dtype=bool)
        n_offered = offered.sum(axis=1)
        lo = np.minimum(presented[0], n_offered)
        hi = np.minimum(presented[1], n_offered)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_stage = np.where(n_offered > 0, (lo + hi) / 2.0 / np.maximum(n_offered, 1), 0.0)
        return cls(
            industries=d.codes("industries"),
            regions=d.codes("regions"),
            positions=d.codes("positions"),
            departments=d.codes("departments"),
            decision_roles=d.codes("decision_roles"),
            legal_forms=d.codes("legal_forms"),
            products=products,
            stages=stages,
            categories=categories,
            needs=needs,
            need_category=need_category,
            chars=chars,
            char_product=np.array([prod_index[ch.product] for ch in d.characteristics], dtype=np.int64),
            answers=answers,
            char_needs_category=char_needs_category,
            offered=offered,
            presented_lo=lo,
            presented_hi=hi,
            presentation=offered * per_stage[:, None],
        )


# ---- the world: every random table of the process, drawn once per seed -----------------------------
@dataclass
class _World:
    industry_p: np.ndarray  # (I,) skewed industry mix
    region_p: np.ndarray  # (R,)
    industry_size: np.ndarray  # (I,) mean log employees
    revenue_per_employee: np.ndarray  # (I,) mln per employee, log-normal
    state_share: np.ndarray  # (I,) share of state-owned organizations
    legal_base: np.ndarray  # (L,)
    legal_size: np.ndarray  # (L,) preference for large organizations
    micro_form: int  # the legal form tiny organizations mostly have
    state_forms: np.ndarray  # (L,) bool: forms state-owned organizations mostly have
    product_industry: np.ndarray  # (I, K) which products clients of an industry own
    seniority: np.ndarray  # (P,) in [0, 1]: how "top" a position is
    position_base: np.ndarray  # (P,)
    department_p: np.ndarray  # (P, D) department mix of each position
    role_base: np.ndarray  # (Dr,)
    role_seniority: np.ndarray  # (Dr,)
    need_popularity: np.ndarray  # (N,)
    interest_position: np.ndarray  # (P, G) interest preferences
    interest_industry: np.ndarray  # (I, G)
    # latent resonance model
    char_base: np.ndarray  # (C,) per-characteristic base (before the calibrated offset)
    stage_product: np.ndarray  # (S, K)
    need_gain: np.ndarray  # (N + 1, C), last row zero (an empty interest slot)
    position_char: np.ndarray  # (P, C)
    industry_char: np.ndarray  # (I, C)
    interaction_char: np.ndarray  # (I, P, C)
    size_threshold: np.ndarray  # (K,) employees
    size_side: np.ndarray  # (K,) +1: matters only at/above, -1: only below, 0: no step
    size_gain: np.ndarray  # (K,)
    region_product: np.ndarray  # (R + 1, K), last row zero (region missing)
    shape: Shape = field(default_factory=Shape)
    offset: float = 0.0
    # derived, float32: base + position + industry + industry×position per (I, P, C); need gains
    person_char: np.ndarray = field(init=False, repr=False)
    need_gain32: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        combined = self.char_base + self.position_char[None, :, :] + self.industry_char[:, None, :]
        self.person_char = (combined + self.interaction_char).astype(np.float32)
        self.need_gain32 = self.need_gain.astype(np.float32)


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def _draw_world(v: _Vocab, rng: np.random.Generator, shape: Shape) -> _World:
    n_i, n_r, n_p, n_d = len(v.industries), len(v.regions), len(v.positions), len(v.departments)
    n_dr, n_l, n_k, n_s = len(v.decision_roles), len(v.legal_forms), len(v.products), len(v.stages)
    n_g, n_n, n_c = len(v.categories), len(v.needs), len(v.chars)

    # a characteristic's need categories, weighted by how many of its needs fall in each; one answering
    # no need belongs to its product's (random) home category
    category = v.char_needs_category.copy()
    product_home = rng.integers(0, n_g, n_k)
    no_need = category.sum(axis=1) == 0
    category[no_need, product_home[v.char_product[no_need]]] = 1.0
    category /= category.sum(axis=1, keepdims=True)

    micro_form = int(rng.integers(0, n_l))
    state_forms = np.zeros(n_l, dtype=bool)
    others = [f for f in range(n_l) if f != micro_form] or [micro_form]
    state_forms[rng.choice(others, size=max(1, round(n_l / 4)) if len(others) > 1 else 1, replace=False)] = True

    char_base = rng.normal(0.0, 0.9, n_c)
    if n_c >= 5:
        rare = rng.choice(n_c, size=max(1, round(shape.rare_share * n_c)), replace=False)
        char_base[rare] = rng.normal(shape.rare_base, 0.3, rare.size)

    need_gain = np.zeros((n_n + 1, n_c))
    need_gain[:n_n] = v.answers * rng.uniform(*NEED_MATCH, n_n)[:, None]

    interaction = _interaction(n_i, n_p, n_g, shape, rng)
    side = np.where(rng.random(n_k) < shape.size_step_share, rng.choice([-1, 1], n_k), 0)
    return _World(
        industry_p=_zipf_weights(n_i, 1.0, rng),
        region_p=_zipf_weights(n_r, 1.2, rng),
        industry_size=rng.normal(3.3, 0.8, n_i),
        revenue_per_employee=np.exp(rng.normal(np.log(3.0), 0.6, n_i)),
        state_share=rng.beta(0.6, 4.0, n_i),
        legal_base=rng.normal(0.0, 1.0, n_l),
        legal_size=rng.normal(0.0, 0.8, n_l),
        micro_form=micro_form,
        state_forms=state_forms,
        product_industry=rng.normal(0.0, 1.0, (n_i, n_k)),
        seniority=rng.permutation(n_p) / max(n_p - 1, 1),
        position_base=rng.normal(0.0, 0.6, n_p),
        department_p=rng.dirichlet(np.full(n_d, 0.4), n_p),
        role_base=rng.normal(0.0, 0.7, n_dr),
        role_seniority=rng.normal(0.0, 2.0, n_dr),
        need_popularity=rng.normal(0.0, 0.7, n_n),
        interest_position=rng.normal(0.0, 1.0, (n_p, n_g)),
        interest_industry=rng.normal(0.0, 1.0, (n_i, n_g)),
        char_base=char_base,
        stage_product=rng.normal(0.0, 0.7, (n_s, n_k)),
        need_gain=need_gain,
        position_char=rng.normal(0.0, 0.8, (n_p, n_g)) @ category.T,
        industry_char=rng.normal(0.0, 0.8, (n_i, n_g)) @ category.T,
        interaction_char=interaction @ category.T,
        size_threshold=np.exp(rng.uniform(np.log(8.0), np.log(1500.0), n_k)),
        size_side=side,
        size_gain=rng.uniform(*shape.size_step_gain, n_k),
        region_product=np.vstack([rng.normal(0.0, 0.25, (n_r, n_k)), np.zeros((1, n_k))]),
        shape=shape,
    )


def _interaction(n_i: int, n_p: int, n_g: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """(I, P, G) boosts of one need category per boosted (industry, position) pair or pair of groups."""
    interaction = np.zeros((n_i, n_p, n_g))
    if shape.interaction_groups is None:
        pairs = rng.random((n_i, n_p)) < shape.interaction_share
        boosted = rng.integers(0, n_g, (n_i, n_p))
        gains = rng.uniform(*shape.interaction_gain, (n_i, n_p))
        ii, pp = np.nonzero(pairs)
        interaction[ii, pp, boosted[ii, pp]] = gains[ii, pp]
        return interaction
    a, b = shape.interaction_groups
    industry_group, position_group = rng.integers(0, a, n_i), rng.integers(0, b, n_p)
    pairs = rng.random((a, b)) < shape.interaction_share
    boosted = rng.integers(0, n_g, (a, b))
    gains = rng.uniform(*shape.interaction_gain, (a, b))
    table = np.zeros((a, b, n_g))
    ga, gb = np.nonzero(pairs)
    table[ga, gb, boosted[ga, gb]] = gains[ga, gb]
    return table[industry_group][:, position_group]


# ---- organizations and contacts (the model-visible values, missing ones included) ------------------
@dataclass
class _Population:
    org_entry: np.ndarray  # (O,) day index of the first appearance in the CRM
    org_industry: np.ndarray
    org_region: np.ndarray  # R = missing
    org_employees: np.ndarray  # float, NaN = missing
    org_revenue: np.ndarray  # float, NaN = missing
    org_legal: np.ndarray  # -1 = missing
    org_founded: np.ndarray  # -1 = missing
    org_client_since: np.ndarray  # day offset from START (may be negative), NaT-like: INT_MIN = prospect
    org_owned: np.ndarray  # (O, K) bool
    org_micro: np.ndarray  # bool: the micro legal form (PII style)
    contact_org: np.ndarray  # (C,)
    contact_position: np.ndarray
    contact_department: np.ndarray  # -1 = missing
    contact_role: np.ndarray  # -1 = missing
    contact_interests: np.ndarray  # (C, MAX_INTERESTS) need indices, N = empty slot


_PROSPECT = np.iinfo(np.int64).min


def _gumbel_argmax(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def _gumbel_top(logits: np.ndarray, counts: np.ndarray, width: int, fill: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, `counts[row]` distinct column indices drawn ∝ exp(logits) without replacement, sorted, padded."""
    n_rows, n_cols = logits.shape
    out = np.full((n_rows, width), fill, dtype=np.int64)
    take = min(width, n_cols)
    for start in range(0, n_rows, 50_000):
        block = logits[start : start + 50_000]
        order = np.argsort(-(block + rng.gumbel(size=block.shape)), axis=1, kind="stable")[:, :take]
        keep = np.arange(take)[None, :] < counts[start : start + 50_000, None]
        out[start : start + 50_000, :take] = np.sort(np.where(keep, order, fill), axis=1)
    return out


def _draw_population(w: _World, v: _Vocab, n_orgs: int, rng: np.random.Generator) -> _Population:
    n_k, n_n = len(v.products), len(v.needs)
    entry = np.sort(np.floor(WINDOW_DAYS * rng.random(n_orgs) ** 0.8).astype(np.int64))
    industry = rng.choice(len(v.industries), n_orgs, p=w.industry_p)
    region = rng.choice(len(v.regions), n_orgs, p=w.region_p)
    micro = rng.random(n_orgs) < MICRO_SHARE
    big = 6 + np.floor(np.exp(rng.normal(w.industry_size[industry], SIZE_SD)))
    employees = np.where(micro, rng.integers(0, 6, n_orgs), big).astype(np.float64)
    per_employee = w.revenue_per_employee[industry] * np.exp(rng.normal(0.0, 0.5, n_orgs))
    revenue = np.where(employees > 0, employees * per_employee, np.exp(rng.normal(np.log(1.5), 1.0, n_orgs)))
    size_z = (np.log1p(employees) - 3.3) / 1.6
    state = rng.random(n_orgs) < w.state_share[industry]
    tiny = (employees <= 5)[:, None]
    legal_logits = (
        w.legal_base[None, :]
        + w.legal_size[None, :] * size_z[:, None]
        + np.where(np.arange(len(v.legal_forms)) == w.micro_form, np.where(tiny, 5.0, -3.0), 0.0)
        + np.where(w.state_forms[None, :], np.where(state[:, None] & ~tiny, 6.0, -3.0), 0.0)
    )
    legal = _gumbel_argmax(legal_logits, rng)
    age = np.exp(rng.normal(np.log(10.0), 0.7, n_orgs)) + np.where(state, 20.0, 0.0) - np.where(micro, 5.0, 0.0)
    entry_year = (START + entry).astype("datetime64[Y]").astype(np.int64) + 1970
    founded = np.minimum(entry_year, 2025 - np.floor(np.maximum(age, 0.0))).astype(np.int64)
    founded = np.maximum(founded, 1900)
    prospect = rng.random(n_orgs) < PROSPECT_BASE / (1.0 + 0.25 * np.clip(size_z, -2, 2))
    founded_day = (np.maximum(founded, 2005) - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    founded_day = (founded_day - START).astype(np.int64)
    client_since = founded_day + np.floor(rng.random(n_orgs) * (WINDOW_DAYS - founded_day)).astype(np.int64)
    client_since = np.where(prospect, _PROSPECT, client_since)
    owned_count = np.where(prospect, 0, rng.choice(len(OWNED_COUNT_P), n_orgs, p=OWNED_COUNT_P))
    owned_idx = _gumbel_top(w.product_industry[industry], owned_count, width=3, fill=n_k, rng=rng)
    owned = np.zeros((n_orgs, n_k + 1), dtype=bool)
    owned[np.arange(n_orgs)[:, None], owned_idx] = True
    owned = owned[:, :n_k]

    n_contacts = 1 + rng.binomial(3, 1.0 / (1.0 + np.exp(-(0.9 * size_z + 0.15))))
    n_contacts = np.where(employees <= 1, 1, n_contacts)
    contact_org = np.repeat(np.arange(n_orgs), n_contacts)
    top = np.clip(2.6 - np.log1p(employees[contact_org]), 0.0, 1.0)  # ~1 for micro organizations
    position_logits = w.position_base[None, :] + (4.0 * top[:, None] - 0.8) * (w.seniority[None, :] - 0.5) * 2.0
    position = _gumbel_argmax(position_logits, rng)
    cum = np.cumsum(w.department_p, axis=1)[position]
    department = np.minimum((rng.random(len(position))[:, None] > cum).sum(axis=1), len(v.departments) - 1)
    role = _gumbel_argmax(w.role_base[None, :] + w.role_seniority[None, :] * w.seniority[position][:, None], rng)
    interest_count = np.minimum(rng.choice(len(INTEREST_COUNT_P), len(position), p=INTEREST_COUNT_P), n_n)
    interest_logits = (
        w.need_popularity[None, :]
        + w.interest_position[position][:, v.need_category]
        + w.interest_industry[industry[contact_org]][:, v.need_category]
    )
    interests = _gumbel_top(interest_logits, interest_count, width=MAX_INTERESTS, fill=n_n, rng=rng)

    # what the CRM lost: missing optional values (the latent model sees exactly what is written)
    def lost(name: str, size: int) -> np.ndarray:
        return rng.random(size) < MISSING_RATE[name]

    region = np.where(lost("region", n_orgs), len(v.regions), region)
    employees = np.where(lost("employees", n_orgs), np.nan, employees)
    revenue = np.where(lost("revenue_mln", n_orgs), np.nan, np.round(revenue, 1))
    legal_visible = np.where(lost("legal_form", n_orgs), -1, legal)
    founded = np.where(lost("founded_year", n_orgs), -1, founded)
    department = np.where(lost("department", len(position)), -1, department)
    role = np.where(lost("decision_role", len(position)), -1, role)
    return _Population(
        org_entry=entry,
        org_industry=industry,
        org_region=region,
        org_employees=employees,
        org_revenue=revenue,
        org_legal=legal_visible,
        org_founded=founded,
        org_client_since=client_since,
        org_owned=owned,
        org_micro=legal == w.micro_form,
        contact_org=contact_org,
        contact_position=position,
        contact_department=department,
        contact_role=role,
        contact_interests=interests,
    )


# ---- journeys, the latent model and outcomes --------------------------------------------------------
@dataclass
class _Episodes:
    contact: np.ndarray  # (E,) contact index
    day: np.ndarray  # (E,) day index from START
    stage: np.ndarray  # (E,) stage index


def _journey_lengths(n_stages: int) -> np.ndarray:
    """P(L = 1..S): truncated geometric with ratio q chosen so that E[L] = JOURNEY_MEAN (or S)."""
    levels = np.arange(1, n_stages + 1)

    def probabilities(q: float) -> np.ndarray:
        weights = q ** (levels - 1.0)
        return weights / weights.sum()

    target = min(JOURNEY_MEAN, float(n_stages))
    lo, hi = 1e-6, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if probabilities(mid) @ levels < target else (lo, mid)
    return probabilities((lo + hi) / 2)


def _draw_episodes(w: _World, v: _Vocab, pop: _Population, rng: np.random.Generator) -> _Episodes:
    """Every contact's talks over the years: a first journey, then retention talks or new journeys.

    Rounds over the contacts still active: each round gives every one of them a segment (a journey
    through the stages, or one talk at the last stage), then decides whether and when the next one
    comes. A contact's dates strictly increase, so (contact, day, stage) is unique.
    """
    n_stages, last = len(v.stages), len(v.stages) - 1
    p_length = _journey_lengths(n_stages)
    org = pop.contact_org
    n_contacts = len(org)
    first_of_org = np.ones(n_contacts, dtype=bool)
    first_of_org[1:] = org[1:] != org[:-1]  # contacts are grouped by organization
    late = ~first_of_org & (rng.random(n_contacts) < LATE_CONTACT_SHARE)
    # a late contact joins within the window (exponential truncated to the days left): no contact from the future
    room = (WINDOW_DAYS - pop.org_entry[org]).astype(np.float64)
    share_in_room = -np.expm1(-room / LATE_CONTACT_DAYS)
    late_delay = -LATE_CONTACT_DAYS * np.log1p(-rng.random(n_contacts) * share_in_room)
    late_delay = np.minimum(np.floor(late_delay), room - 1)
    delay = np.where(late, late_delay, np.floor(rng.exponential(CONTACT_START_DAYS, n_contacts)))
    who = np.arange(n_contacts)
    start = pop.org_entry[org] + delay.astype(np.int64)
    journey = np.ones(n_contacts, dtype=bool)  # the next segment is a journey (else a retention talk)
    client_since = pop.org_client_since[org]
    client_since = np.where(client_since == _PROSPECT, np.iinfo(np.int64).max, client_since)  # never reached
    signed = np.zeros(n_contacts, dtype=bool)  # the contact reached the last stage: a client since
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while who.size:
        length = np.where(journey, 1 + rng.choice(n_stages, who.size, p=p_length), 1)
        contact = np.repeat(who, length)
        starts = np.cumsum(length) - length
        step = np.arange(len(contact)) - np.repeat(starts, length)
        stage = np.where(np.repeat(journey, length), step, last)
        gaps = 3 + np.floor(rng.exponential(STAGE_GAP_DAYS, len(contact))).astype(np.int64)
        gaps[starts] = 0
        total = np.cumsum(gaps)
        day = np.repeat(start, length) + total - np.repeat(total[starts], length)
        parts.append((contact, day, stage))
        ends = starts + length - 1
        end = day[ends]
        signed[who] |= stage[ends] == last
        client = signed[who] | (client_since[who] <= end)
        again = rng.random(who.size) < np.where(client, CLIENT_KEEP, PROSPECT_RETURN)
        journey = ~client | (rng.random(who.size) < UPSELL_SHARE)
        new_journey = NEW_JOURNEY_DAYS[0] + np.floor(rng.exponential(NEW_JOURNEY_DAYS[1], who.size))
        retention = rng.integers(RETENTION_GAP_DAYS[0], RETENTION_GAP_DAYS[1] + 1, who.size)
        start = end + np.where(journey, new_journey.astype(np.int64), retention)
        active = again & (start < WINDOW_DAYS)
        who, start, journey = who[active], start[active], journey[active]
    contact, day, stage = (np.concatenate(p) for p in zip(*parts, strict=True))  # ≥ 1 round: every org has a contact
    keep = (day < WINDOW_DAYS) & (v.offered.sum(axis=1) > 0)[stage]
    contact, day, stage = contact[keep], day[keep], stage[keep]
    order = np.lexsort((stage, contact, day))
    return _Episodes(contact=contact[order], day=day[order], stage=stage[order])


def _logits(w: _World, v: _Vocab, pop: _Population, contact: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """Resonance logits (without the calibrated offset) for episodes, from model-visible fields only."""
    org = pop.contact_org[contact]
    industry, position = pop.org_industry[org], pop.contact_position[contact]
    employees = pop.org_employees[org]
    with np.errstate(invalid="ignore"):
        below = employees[:, None] < w.size_threshold[None, :]
    wrong_side = np.where(w.size_side > 0, below, np.where(w.size_side < 0, ~below, False))
    wrong_side &= ~np.isnan(employees)[:, None]
    own = np.where(stage == len(v.stages) - 1, w.shape.owned_last, w.shape.owned_early)
    per_product = (
        w.stage_product[stage]
        - w.size_gain[None, :] * wrong_side
        + w.region_product[pop.org_region[org]]
        + pop.org_owned[org] * own[:, None]
    )
    z = w.person_char[industry, position]
    z += per_product.astype(np.float32)[:, v.char_product]
    for slot in pop.contact_interests[contact].T:
        z += w.need_gain32[slot]
    return z


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _calibrate(w: _World, v: _Vocab, rng: np.random.Generator) -> float:
    """The offset that gives the shape's target positives per episode on a fixed-size reference population."""
    reference = _draw_population(w, v, REFERENCE_ORGS, rng)
    episodes = _draw_episodes(w, v, reference, rng)
    if len(episodes.contact) == 0:
        return 0.0
    z = _logits(w, v, reference, episodes.contact, episodes.stage).astype(np.float64)
    presentation = v.presentation[episodes.stage]
    ceiling = presentation.sum(axis=1).mean()
    target = min(w.shape.target_positives, 0.4 * ceiling)
    lo, hi, offset = -30.0, 30.0, 0.0
    for _ in range(100):  # safeguarded Newton: the expected count rises monotonically with the offset
        p = _sigmoid(z + offset)
        gap = (presentation * p).sum(axis=1).mean() - target
        if abs(gap) < 1e-9:
            break
        lo, hi = (offset, hi) if gap < 0 else (lo, offset)
        slope = (presentation * p * (1.0 - p)).sum(axis=1).mean()
        step = offset - gap / slope if slope > 0 else lo - 1.0
        offset = step if lo < step < hi else (lo + hi) / 2
    return offset


@dataclass
class _Outcomes:
    episode: np.ndarray  # (rows,) episode index
    char: np.ndarray  # (rows,) characteristic index
    positive: np.ndarray  # (rows,) bool


def _draw_outcomes(
    w: _World, v: _Vocab, pop: _Population, ep: _Episodes, rng: np.random.Generator
) -> tuple[_Outcomes, np.ndarray]:
    n_episodes, n_chars = len(ep.contact), len(v.chars)
    oracle = np.empty((n_episodes, n_chars), dtype=np.float32)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    count = rng.integers(v.presented_lo[ep.stage], v.presented_hi[ep.stage] + 1)
    for start in range(0, n_episodes, _EPISODE_CHUNK):
        rows = slice(start, start + _EPISODE_CHUNK)
        stage = ep.stage[rows]
        resonance = _sigmoid(_logits(w, v, pop, ep.contact[rows], stage) + w.offset)
        oracle[rows] = v.presentation[stage] * resonance
        # a uniformly random subset of count[e] offered characteristics: the count smallest random keys
        keys = np.where(v.offered[stage], rng.random(resonance.shape, dtype=np.float32), np.float32(2.0))
        most = int(count[rows].max(initial=0))
        if most < n_chars:
            candidates = np.argpartition(keys, most - 1, axis=1)[:, :most]
            ranked = np.take_along_axis(candidates, np.argsort(np.take_along_axis(keys, candidates, 1), 1), 1)
        else:
            ranked = np.argsort(keys, axis=1)
        presented = np.zeros(resonance.shape, dtype=bool)
        picked = np.arange(ranked.shape[1])[None, :] < count[rows, None]
        np.put_along_axis(presented, ranked, picked, axis=1)
        positive = rng.random(resonance.shape, dtype=np.float32) < resonance
        episode, char = np.nonzero(presented)
        parts.append((episode + start, char, positive[episode, char]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return _Outcomes(empty, empty, np.zeros(0, dtype=bool)), oracle
    return _Outcomes(*(np.concatenate(p) for p in zip(*parts, strict=True))), oracle
