"""Similar organizations: one embedding per organization, a nearest-neighbour index, its evaluation.

"Where did this work before, at organizations like this one?" Each model version carries an
embedding per organization of the training CRM (`SIDE_DIR` inside the version), computed one of
two ways, chosen per version by measurement (`neighbour_lift` on the validation period):

- `network`: the network's penultimate layer (every ensemble tower's, side by side) averaged over
  the organization's contacts at every funnel stage — what the model "thinks" of the organization;
- `features`: the encoder's organization columns (industry, region, legal form, products owned,
  size, revenue, age and tenure bins) — plain firmographics.

`OrganizationIndex` holds the unit-length embeddings and, per characteristic, the organizations
where it resonated (with the number of positive outcomes, the last positive date and, when
outcomes carry `manager_id`, who had it resonate). A query is exact brute-force cosine: one
matrix-vector product over the unit rows (50k organizations: under a millisecond), restricted to
the characteristic's positive organizations, then a partial sort. Measured against scikit-learn's
NearestNeighbors (brute, cosine) on the same rows: its per-call validation and threaded top-k cost
4.6 ms single-threaded and 20–60 ms with OpenMP threads on 2 cores for one query, and a tree does not
help in 115–128 dimensions; hnswlib/faiss would add a dependency and approximation for no gain
at this size (bench/queries.py). Only codes, numbers and opaque ids are stored:
no names, so a version holds no personal data; `similar_reason` turns neighbours into the card's
sentence with names from the dictionaries.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from needs_rec import schema
from needs_rec.dictionaries import normalize_code
from needs_rec.errors import ModelError, RequestError, clipped, unknown_characteristic

SIDE_DIR = "organizations"
EMBEDDINGS_FILE = "embeddings.npy"
ORGANIZATIONS_FILE = "organizations.parquet"
POSITIVES_FILE = "positives.parquet"
MANAGERS_FILE = "managers.parquet"
KINDS = ("network", "features")
#: Organization fields whose encoded columns form the `features` embedding.
ORG_FIELDS = ("industry", "region", "legal_form", "products_owned")
ORG_NUMBERS = ("employees", "revenue_mln", "founded_year", "client_years")
DEFAULT_K = 10
MAX_K = 100
#: Employee bands of the card's reason, as (lower bound, label); the last is open-ended.
EMPLOYEE_BANDS: tuple[tuple[float, str], ...] = (
    (0, "до 10"), (10, "10–50"), (50, "50–100"), (100, "100–250"), (250, "250–500"),
    (500, "500–1000"), (1000, "1000–5000"), (5000, "более 5000"),
)
#: How many managers an answer names per organization.
MAX_MANAGERS = 3


# --------------------------------------------------------------------------------------------
# embeddings


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def organization_frame(crm: schema.CrmData, on: dt.date) -> pd.DataFrame:
    """One model-input row per organization (contact fields missing, no stage), in org_id order."""
    orgs = crm.organizations.sort_values("org_id", kind="stable").reset_index(drop=True)
    # model_inputs joins through contacts; organizations without one get a stand-in contact row.
    contacts = pd.DataFrame({"contact_id": "__org__" + orgs["org_id"], "org_id": orgs["org_id"]})
    for name in ("position", "department", "decision_role", "interests"):
        contacts[name] = ""
    keys = pd.DataFrame({"contact_id": contacts["contact_id"], schema.STAGE: "", schema.OCCURRED_ON: on.isoformat()})
    frame = _model_inputs(keys, schema.CrmData(orgs, contacts, crm.outcomes.iloc[:0]))
    frame.index = orgs["org_id"].to_numpy()
    return frame


def _model_inputs(keys: pd.DataFrame, crm: schema.CrmData) -> pd.DataFrame:
    from needs_rec.episodes import model_inputs

    return model_inputs(keys, crm)


def feature_embedding(encoder: Any, crm: schema.CrmData, on: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """(org ids in order, encoded organization columns): the `features` embedding, not yet unit-scaled."""
    frame = organization_frame(crm, on)
    encoded = encoder.encode_frame(frame.reset_index(drop=True))
    names = encoder.feature_names
    columns = [
        i for i, name in enumerate(names)
        if name.split("=", 1)[0] in ORG_FIELDS or name.split(":", 1)[0] in ORG_NUMBERS
    ]
    return frame.index.to_numpy(dtype=object), encoded[:, columns]


def penultimate_model(network: Any) -> Any:
    """A Keras model: encoded features → every tower's last hidden layer, concatenated."""
    import keras

    outputs = [layer.input for layer in network.layers
               if isinstance(layer, keras.layers.Dense) and layer.name.endswith("logits")]
    if not outputs:
        raise ModelError("the network has no layer named '*logits' to take the penultimate activations from")
    merged = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate()(outputs)
    return keras.Model(network.input, merged)


def network_embedding(
    encoder: Any, network: Any, crm: schema.CrmData, stages: Sequence[str], on: dt.date, batch: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(org ids in order, mean penultimate activation over each organization's contacts × stages).

    Organizations without contacts get the activation of their organization row alone (contact
    fields missing), so every organization has an embedding.
    """
    hidden = penultimate_model(network)
    contacts = crm.contacts.sort_values("contact_id", kind="stable").reset_index(drop=True)
    org_ids = np.sort(crm.organizations["org_id"].to_numpy(dtype=object))
    org_row = schema.lookup(contacts["org_id"], org_ids)
    sums: np.ndarray | None = None
    counts = np.zeros(len(org_ids))
    for stage in stages:
        keys = pd.DataFrame({"contact_id": contacts["contact_id"], schema.STAGE: stage,
                             schema.OCCURRED_ON: on.isoformat()})
        x = encoder.encode_frame(_model_inputs(keys, crm))
        for start in range(0, len(x), batch):
            h = np.asarray(hidden(x[start : start + batch], training=False), dtype=np.float64)
            if sums is None:
                sums = np.zeros((len(org_ids), h.shape[1]))
            np.add.at(sums, org_row[start : start + batch], h)
            counts += np.bincount(org_row[start : start + batch], minlength=len(org_ids))
    lonely = counts == 0
    if sums is None or lonely.any():
        frame = organization_frame(crm, on)
        x = encoder.encode_frame(frame.reset_index(drop=True)[lonely] if sums is not None else frame)
        h = np.asarray(hidden(x, training=False), dtype=np.float64)
        if sums is None:
            return org_ids, h.astype(np.float32)
        sums[lonely], counts[lonely] = h, 1
    return org_ids, (sums / counts[:, None]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# outcomes per organization


def positive_table(crm: schema.CrmData, until: dt.date | None = None) -> pd.DataFrame:
    """org_id, characteristic, positives (positive outcome rows), last_positive_on, from the outcomes."""
    positive = crm.outcomes[crm.outcomes["outcome"] == schema.POSITIVE]
    if until is not None:
        positive = positive[positive[schema.OCCURRED_ON] < pd.Timestamp(until)]
    org = crm.contact_orgs().reindex(positive["contact_id"].to_numpy()).to_numpy()
    frame = pd.DataFrame({"org_id": org, "characteristic": positive["characteristic"].to_numpy(),
                          "day": positive[schema.OCCURRED_ON].to_numpy()}).dropna(subset=["org_id"])
    table = frame.groupby(["org_id", "characteristic"], sort=True).agg(
        positives=("day", "size"), last_positive_on=("day", "max")
    ).reset_index()
    table["positives"] = table["positives"].astype(np.int64)
    table["last_positive_on"] = pd.to_datetime(table["last_positive_on"]).dt.date
    return table


def manager_table(crm: schema.CrmData) -> pd.DataFrame:
    """org_id, characteristic, manager_id, positives: who had each characteristic resonate where."""
    out = crm.outcomes
    if "manager_id" not in out.columns:
        return pd.DataFrame({"org_id": [], "characteristic": [], "manager_id": [], "positives": []})
    positive = out[(out["outcome"] == schema.POSITIVE) & (out["manager_id"].astype(str) != "")]
    org = crm.contact_orgs().reindex(positive["contact_id"].to_numpy()).to_numpy()
    frame = pd.DataFrame({"org_id": org, "characteristic": positive["characteristic"].to_numpy(),
                          "manager_id": positive["manager_id"].astype(str).to_numpy()}).dropna(subset=["org_id"])
    table = frame.groupby(["org_id", "characteristic", "manager_id"], sort=True).size().rename("positives")
    return table.reset_index().astype({"positives": np.int64})


# --------------------------------------------------------------------------------------------
# the index


@dataclass
class Neighbour:
    """One similar organization where the characteristic resonated."""

    org_id: str
    similarity: float
    positives: int
    last_positive_on: dt.date | None
    managers: list[tuple[str, int]] = field(default_factory=list)
    industry: str = ""
    employees: float = math.nan

    def to_json(self, with_managers: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "org_id": self.org_id,
            "similarity": round(self.similarity, 6),
            "positives": self.positives,
            "last_positive_on": self.last_positive_on.isoformat() if self.last_positive_on else None,
        }
        if with_managers:
            answer["managers"] = [{"manager_id": m, "positives": n} for m, n in self.managers]
        return answer


class OrganizationIndex:
    """Unit embeddings of organizations plus, per characteristic, a k-NN index over its positive ones.

    Build with `OrganizationIndex(org_ids, embeddings, organizations, positives, managers,
    characteristic_codes)`: `organizations` has org_id, industry, employees (any order; aligned
    by id), `positives` the `positive_table` columns, `managers` the `manager_table` ones.
    """

    def __init__(
        self,
        org_ids: Sequence[str],
        embeddings: np.ndarray,
        organizations: pd.DataFrame,
        positives: pd.DataFrame,
        managers: pd.DataFrame | None,
        characteristic_codes: Sequence[str],
        kind: str = "features",
    ):
        self.org_ids = np.asarray(org_ids, dtype=object)
        self.kind = kind
        self.embeddings = unit_rows(embeddings)
        if self.embeddings.shape[0] != len(self.org_ids):
            raise ModelError(f"organization index: {len(self.org_ids)} ids for {self.embeddings.shape[0]} embeddings")
        self.row_of = {str(o): i for i, o in enumerate(self.org_ids)}
        meta = organizations.set_index("org_id").reindex(self.org_ids)
        self.industry = meta["industry"].fillna("").to_numpy(dtype=object)
        self.employees = pd.to_numeric(meta["employees"], errors="coerce").to_numpy(dtype=np.float64)
        self.characteristic_codes = tuple(characteristic_codes)
        self.has_managers = managers is not None and len(managers) > 0
        self._positives: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        rows = schema.lookup(positives["org_id"].astype(str), pd.Series(self.org_ids, dtype="str"))
        table = positives.assign(row=rows)[rows >= 0]
        for code, part in table.groupby("characteristic", sort=True):
            part = part.sort_values("row")
            self._positives[str(code)] = (
                part["row"].to_numpy(np.int64),
                part["positives"].to_numpy(np.int64),
                pd.to_datetime(part["last_positive_on"]).to_numpy().astype("datetime64[D]"),
            )
        # Managers as one array sorted by (organization row, characteristic, most positives first):
        # a lookup is a binary search, and building it is vectorised (no loop over 100k+ groups).
        self._manager_keys = np.zeros(0, dtype=np.int64)
        self._manager_ids = np.zeros(0, dtype=object)
        self._manager_counts = np.zeros(0, dtype=np.int64)
        self._char_index = {code: i for i, code in enumerate(self.characteristic_codes)}
        self._controller = ThreadpoolController()  # inspects the loaded libraries once
        if self.has_managers and managers is not None:
            m_rows = schema.lookup(managers["org_id"].astype(str), pd.Series(self.org_ids, dtype="str"))
            m_chars = schema.lookup(managers["characteristic"].astype(str), list(self.characteristic_codes))
            m = managers.assign(key=m_rows * len(self.characteristic_codes) + m_chars)[(m_rows >= 0) & (m_chars >= 0)]
            m = m.sort_values(["key", "positives", "manager_id"], ascending=[True, False, True])
            self._manager_keys = m["key"].to_numpy(np.int64)
            self._manager_ids = m["manager_id"].astype(str).to_numpy(dtype=object)
            self._manager_counts = m["positives"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.org_ids)

    def positive_organizations(self, characteristic: str) -> int:
        """How many organizations the characteristic resonated at."""
        return len(self._positives.get(characteristic, ((),))[0])

    def characteristic(self, code: str) -> str:
        """A normalised characteristic code of the vocabulary, or RequestError naming what is allowed."""
        norm = normalize_code(code or "")
        if norm not in self.characteristic_codes:
            raise unknown_characteristic(code, self.characteristic_codes)
        return norm

    def similar(self, org_id: str, characteristic: str, k: int = DEFAULT_K) -> list[Neighbour]:
        """The k organizations most like `org_id` (itself excluded) where `characteristic` resonated."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RequestError(f"field 'k': must be a whole number from 1 to {MAX_K}; received {k!r}")
        code = self.characteristic(characteristic)
        row = self.row_of.get(str(org_id).strip())
        if row is None:
            raise LookupError(
                f"organization {clipped(str(org_id))!r} is not in the organization index of this model version "
                "(organizations added after training get one at the next training)"
            )
        if code not in self._positives:
            return []
        org_rows, counts, last = self._positives[code]
        sims = self._similarities(row)[org_rows]
        n = min(k + 1, len(org_rows))
        top = np.argpartition(-sims, n - 1)[:n]
        top = top[np.lexsort((org_rows[top], -sims[top]))]  # most similar first, ties by row
        distance, found = [1.0 - sims[top]], [top]
        result = []
        for d, i in zip(distance[0], found[0], strict=True):
            other = int(org_rows[i])
            if other != row:
                result.append(self._neighbour(other, float(1.0 - d), code, int(i), counts, last))
        return result[:k]

    def card_neighbours(
        self, org_id: str, characteristics: Sequence[str], k: int = DEFAULT_K
    ) -> dict[str, list[Neighbour]]:
        """For the card: of the k organizations most like `org_id` (any, itself excluded), those where
        each characteristic resonated — so «сработало у 4 похожих организаций» means 4 of its 10
        nearest, not merely the 4 nearest of all that ever had it. Unknown organization: {}."""
        row = self.row_of.get(str(org_id).strip())
        if row is None:
            return {}
        sims = self._similarities(row)
        sims[row] = -np.inf
        n = min(k, len(self.org_ids) - 1)
        top = np.argpartition(-sims, n - 1)[:n] if n > 0 else np.zeros(0, dtype=np.int64)
        top = top[np.lexsort((top, -sims[top]))]
        distance, found = [1.0 - sims[top]], [top]
        pairs = [(int(i), float(1.0 - d)) for d, i in zip(distance[0], found[0], strict=True) if int(i) != row][:k]
        result: dict[str, list[Neighbour]] = {}
        for code in characteristics:
            if code not in self._positives:
                result[code] = []
                continue
            org_rows, counts, last = self._positives[code]  # org_rows ascending
            at = np.searchsorted(org_rows, [other for other, _ in pairs])
            result[code] = [self._neighbour(other, sim, code, int(i), counts, last)
                            for (other, sim), i in zip(pairs, at, strict=True)
                            if i < len(org_rows) and org_rows[i] == other]
        return result

    def _similarities(self, row: int) -> np.ndarray:
        """Cosine similarity of organization `row` to every organization (rows are unit length).

        One BLAS thread: a matrix-vector product is memory-bound, and on a busy 2-core machine extra
        BLAS threads made it 5x slower (11.5 ms vs 2.3 ms at 50k x 115, bench/queries.py)."""
        with self._controller.limit(limits=1, user_api="blas"):
            return self.embeddings @ self.embeddings[row]

    def _managers_of(self, row: int, code: str) -> list[tuple[str, int]]:
        """Up to MAX_MANAGERS (manager_id, positives) of one organization and characteristic, most first."""
        j = self._char_index.get(code)
        if j is None or not len(self._manager_keys):
            return []
        key = row * len(self.characteristic_codes) + j
        lo, hi = np.searchsorted(self._manager_keys, [key, key + 1])
        hi = min(hi, lo + MAX_MANAGERS)
        return [(str(m), int(n)) for m, n in zip(self._manager_ids[lo:hi], self._manager_counts[lo:hi], strict=True)]

    def _neighbour(self, other: int, sim: float, code: str, i: int, counts: np.ndarray, last: np.ndarray) -> Neighbour:
        return Neighbour(
            org_id=str(self.org_ids[other]),
            similarity=sim,
            positives=int(counts[i]),
            last_positive_on=pd.Timestamp(last[i]).date() if not np.isnat(last[i]) else None,
            managers=self._managers_of(other, code),
            industry=str(self.industry[other]),
            employees=float(self.employees[other]),
        )

    # -- files -----------------------------------------------------------------------------

    def write(self, directory: Path, positives: pd.DataFrame, managers: pd.DataFrame | None) -> None:
        """Write the side files into `directory` (created): embeddings, organizations, positives, managers."""
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS_FILE, self.embeddings, allow_pickle=False)
        pd.DataFrame({"org_id": self.org_ids.astype(str), "industry": self.industry.astype(str),
                      "employees": self.employees}).to_parquet(directory / ORGANIZATIONS_FILE, index=False)
        positives.to_parquet(directory / POSITIVES_FILE, index=False)
        (managers if managers is not None else manager_table_empty()).to_parquet(directory / MANAGERS_FILE, index=False)

    @classmethod
    def read(cls, directory: Path, characteristic_codes: Sequence[str], kind: str,
             positives: pd.DataFrame | None = None, managers: pd.DataFrame | None = None) -> OrganizationIndex:
        """Load the side files of a version; `positives` / `managers` replace the stored ones (fresh CRM)."""
        try:
            embeddings = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
            organizations = pd.read_parquet(directory / ORGANIZATIONS_FILE)
            stored_positives = pd.read_parquet(directory / POSITIVES_FILE)
            stored_managers = pd.read_parquet(directory / MANAGERS_FILE)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory}: organization index files cannot be read ({type(exc).__name__})") from exc
        return cls(
            organizations["org_id"].to_numpy(dtype=object),
            embeddings,
            organizations,
            stored_positives if positives is None else positives,
            stored_managers if managers is None else managers,
            characteristic_codes,
            kind=kind,
        )


def manager_table_empty() -> pd.DataFrame:
    return pd.DataFrame({"org_id": pd.Series([], dtype="str"), "characteristic": pd.Series([], dtype="str"),
                         "manager_id": pd.Series([], dtype="str"), "positives": pd.Series([], dtype="int64")})


# --------------------------------------------------------------------------------------------
# evaluation


def neighbour_lift(
    embeddings: np.ndarray,
    industry: np.ndarray,
    past_positive: np.ndarray,
    past_active: np.ndarray,
    later_positive: np.ndarray,
    k: int = DEFAULT_K,
    chunk: int = 2048,
) -> dict[str, Any]:
    """How much likelier C resonated (earlier) at an organization's k most similar ones than at
    organizations of its industry, measured where C resonated (later) at the organization itself.

    Rows are organizations. `past_positive` / `later_positive` (bool, orgs × characteristics):
    C resonated before / after the split date; `past_active`: the organization had any outcome
    before it (the pool neighbours are drawn from). For each (org q, C) with `later_positive`, the
    rate at q's k nearest pool organizations (q excluded) is compared with the expected rate of k
    random pool organizations of q's industry (q excluded: their exact mean). Returns the pooled
    rates, their ratio `lift`, and the number of (org, C) queries.
    """
    e = unit_rows(embeddings)
    past = np.asarray(past_positive, dtype=bool)
    pool = np.flatnonzero(past_active)
    queries = np.flatnonzero(np.asarray(later_positive).any(axis=1))
    if len(pool) <= k or len(queries) == 0:
        return {"neighbour_rate": None, "industry_rate": None, "lift": None, "queries": 0, "k": k}
    codes, inverse = np.unique(np.asarray(industry).astype(str), return_inverse=True)
    in_pool = np.zeros(len(e), dtype=bool)
    in_pool[pool] = True
    ind_sum = np.zeros((len(codes), past.shape[1]))
    np.add.at(ind_sum, inverse[pool], past[pool])
    ind_n = np.bincount(inverse[pool], minlength=len(codes)).astype(np.float64)
    near_total, ind_total, n_queries = 0.0, 0.0, 0
    pool_e = e[pool]
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        sims = e[q] @ pool_e.T
        sims[pool[None, :] == q[:, None]] = -np.inf  # never its own neighbour
        nearest = pool[np.argpartition(-sims, k - 1, axis=1)[:, :k]]
        near_rate = past[nearest].mean(axis=1)  # (queries, C)
        own = in_pool[q][:, None] & past[q]
        n_same = ind_n[inverse[q]] - in_pool[q]
        ind_rate = np.divide(ind_sum[inverse[q]] - own, n_same[:, None], out=np.full(own.shape, np.nan),
                             where=n_same[:, None] > 0)
        cells = np.asarray(later_positive)[q] & np.isfinite(ind_rate)
        near_total += float(near_rate[cells].sum())
        ind_total += float(ind_rate[cells].sum())
        n_queries += int(cells.sum())
    if n_queries == 0:
        return {"neighbour_rate": None, "industry_rate": None, "lift": None, "queries": 0, "k": k}
    return {
        "neighbour_rate": round(near_total / n_queries, 4),
        "industry_rate": round(ind_total / n_queries, 4),
        "lift": round(near_total / ind_total, 4) if ind_total > 0 else None,
        "queries": n_queries,
        "k": k,
    }


def org_outcome_matrices(
    crm: schema.CrmData, org_ids: np.ndarray, codes: Sequence[str], split_on: dt.date, end: dt.date | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(past_positive, past_active, later_positive) over `org_ids` × `codes`, cut at `split_on`
    (later = on/after it and, when `end` is given, before `end`)."""
    out = crm.outcomes
    org = crm.contact_orgs().reindex(out["contact_id"].to_numpy()).to_numpy()
    rows = schema.lookup(pd.Series(org, dtype="str").fillna(""), pd.Series(org_ids, dtype="str"))
    cols = schema.lookup(out["characteristic"], list(codes))
    day = out[schema.OCCURRED_ON]
    before = (day < pd.Timestamp(split_on)).to_numpy()
    later = ~before if end is None else ~before & (day < pd.Timestamp(end)).to_numpy()
    positive = (out["outcome"] == schema.POSITIVE).to_numpy()
    ok = (rows >= 0) & (cols >= 0)
    shape = (len(org_ids), len(codes))
    past_positive = np.zeros(shape, dtype=bool)
    later_positive = np.zeros(shape, dtype=bool)
    past_active = np.zeros(len(org_ids), dtype=bool)
    sel = ok & before & positive
    past_positive[rows[sel], cols[sel]] = True
    past_active[rows[ok & before]] = True
    sel = ok & later & positive
    later_positive[rows[sel], cols[sel]] = True
    return past_positive, past_active, later_positive


# --------------------------------------------------------------------------------------------
# one version's index


@dataclass
class VersionIndex:
    """What `build_for_version` made: the index, the tables it was built from, and the measurements."""

    index: OrganizationIndex
    positives: pd.DataFrame
    managers: pd.DataFrame
    summary: dict[str, Any]

    def write(self, version_dir: Path) -> None:
        self.index.write(version_dir / SIDE_DIR, self.positives, self.managers)


def build_for_version(
    encoder: Any,
    network: Any,
    crm: schema.CrmData,
    characteristic_codes: Sequence[str],
    stages: Sequence[str],
    *,
    validation_start: dt.date,
    test_start: dt.date,
    on: dt.date,
    until: dt.date | None = None,
    k: int = DEFAULT_K,
) -> VersionIndex:
    """Compute both embeddings, choose the one with the higher neighbour lift on the validation
    period (earlier outcomes before `validation_start`, later ones up to `test_start`), report
    both on the test period (before / from `test_start`), and build the index of the chosen one
    over every organization with the outcomes before `until` (all when None)."""
    import time

    if until is not None:
        crm = schema.CrmData(crm.organizations, crm.contacts,
                             crm.outcomes[crm.outcomes[schema.OCCURRED_ON] < pd.Timestamp(until)])

    timings: dict[str, float] = {}
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.perf_counter()
    embeddings["features"] = feature_embedding(encoder, crm, on)
    timings["features_embedding_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    embeddings["network"] = network_embedding(encoder, network, crm, stages, on)
    timings["network_embedding_s"] = round(time.perf_counter() - started, 3)
    org_ids = embeddings["features"][0]
    industry = crm.organizations.set_index("org_id").reindex(org_ids)["industry"].to_numpy(dtype=object)
    validation: dict[str, Any] = {}
    test: dict[str, Any] = {}
    for kind, (ids, vectors) in embeddings.items():
        assert (ids == org_ids).all()
        past, active, later = org_outcome_matrices(crm, org_ids, characteristic_codes, validation_start, test_start)
        validation[kind] = neighbour_lift(vectors, industry, past, active, later, k=k)
        past, active, later = org_outcome_matrices(crm, org_ids, characteristic_codes, test_start)
        test[kind] = neighbour_lift(vectors, industry, past, active, later, k=k)

    def score(kind: str) -> float:
        value = validation[kind]["lift"]
        return -math.inf if value is None else float(value)

    chosen = "network" if score("network") > score("features") else "features"
    positives = positive_table(crm)
    managers = manager_table(crm)
    organizations = crm.organizations[["org_id", "industry", "employees"]]
    started = time.perf_counter()
    index = OrganizationIndex(org_ids, embeddings[chosen][1], organizations, positives, managers,
                              characteristic_codes, kind=chosen)
    timings["index_build_s"] = round(time.perf_counter() - started, 3)
    summary = {
        "kind": chosen,
        "organizations": len(index),
        "dimensions": int(index.embeddings.shape[1]),
        "k": k,
        "lift_validation": validation,
        "lift_test": test,
        "with_managers": index.has_managers,
        "timings": timings,
    }
    return VersionIndex(index, positives, managers, summary)


# --------------------------------------------------------------------------------------------
# the card's reason


def employee_band(employees: float) -> str | None:
    """The band label of a head count (None when unknown)."""
    if not math.isfinite(employees):
        return None
    label = EMPLOYEE_BANDS[0][1]
    for lower, name in EMPLOYEE_BANDS:
        if employees >= lower:
            label = name
    return label


def similar_reason(
    neighbours: Sequence[Neighbour], industry_names: Mapping[str, str], with_managers: bool = True
) -> str | None:
    """«сработало у 4 похожих организаций: строительство, 100–250 сотрудников» (None without neighbours).

    The industry is named when at least half of the neighbours share it, and so is the head-count
    band of their median size (a median of 40, 97 and 186 is no band of theirs); with
    `with_managers` and known managers, who had it resonate.
    """
    if not neighbours:
        return None
    n = len(neighbours)
    subject = "похожей организации" if n % 10 == 1 and n % 100 != 11 else "похожих организаций"
    details = []
    industries = pd.Series([nb.industry for nb in neighbours if nb.industry])
    if len(industries):
        top, count = industries.value_counts().index[0], int(industries.value_counts().iloc[0])
        if 2 * count >= n and top in industry_names:
            details.append(str(industry_names[top]).lower())
    sizes = [nb.employees for nb in neighbours if math.isfinite(nb.employees)]
    band = employee_band(float(np.median(sizes))) if sizes else None
    if band and 2 * sum(employee_band(size) == band for size in sizes) < n:  # as the industry: most of them
        band = None
    if band:
        details.append(f"{band} сотрудников")
    text = f"сработало у {n} {subject}" + (f": {', '.join(details)}" if details else "")
    if with_managers:
        totals: dict[str, int] = {}
        for nb in neighbours:
            for manager, count in nb.managers:
                totals[manager] = totals.get(manager, 0) + count
        if totals:
            best = sorted(totals, key=lambda m: (-totals[m], m))[:MAX_MANAGERS]
            whom = "менеджеру" if len(best) == 1 else "менеджерам"
            text += f"; там это удавалось {whom} {', '.join(best)}"
    return text
