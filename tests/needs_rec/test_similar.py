"""Similar organizations: a hand-built neighbour set, the lift evaluation and the card's reason."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from needs_rec import similar
from needs_rec.errors import RequestError

CODES = ["ch_a", "ch_b"]
#: Five organizations in the plane; cosine similarity to o1 = (1, 0) is the first coordinate of the unit vector.
POINTS = {"o1": (1.0, 0.0), "o2": (0.9, 0.1), "o3": (0.0, 1.0), "o4": (0.7, 0.7), "o5": (1.0, 0.05)}


def cosine(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture
def index():
    organizations = pd.DataFrame({
        "org_id": list(POINTS),
        "industry": ["it", "it", "retail", "retail", "it"],
        "employees": [120, 150, 30, np.nan, 200],
    })
    positives = pd.DataFrame({  # ch_a resonated everywhere but o1; ch_b only at o3
        "org_id": ["o2", "o3", "o4", "o5", "o3"],
        "characteristic": ["ch_a", "ch_a", "ch_a", "ch_a", "ch_b"],
        "positives": [2, 1, 5, 3, 1],
        "last_positive_on": [dt.date(2024, 3, 1), dt.date(2024, 1, 5), dt.date(2024, 2, 2), dt.date(2024, 4, 4),
                             dt.date(2023, 12, 1)],
    })
    managers = pd.DataFrame({
        "org_id": ["o5", "o5", "o2"], "characteristic": ["ch_a"] * 3,
        "manager_id": ["m7", "m2", "m7"], "positives": [1, 2, 2],
    })
    return similar.OrganizationIndex(list(POINTS), np.array(list(POINTS.values())), organizations, positives,
                                     managers, CODES)


def test_nearest_organizations_where_the_characteristic_resonated(index):
    found = index.similar("o1", "ch_a", k=3)
    assert [n.org_id for n in found] == ["o5", "o2", "o4"]
    for n in found:
        assert n.similarity == pytest.approx(cosine(POINTS["o1"], POINTS[n.org_id]), abs=1e-6)
    assert [n.positives for n in found] == [3, 2, 5]
    assert found[0].last_positive_on == dt.date(2024, 4, 4)
    assert found[0].managers == [("m2", 2), ("m7", 1)]
    assert found[0].to_json(with_managers=True) == {
        "org_id": "o5", "similarity": round(cosine(POINTS["o1"], POINTS["o5"]), 6), "positives": 3,
        "last_positive_on": "2024-04-04", "managers": [{"manager_id": "m2", "positives": 2},
                                                         {"manager_id": "m7", "positives": 1}],
    }


def test_the_organization_itself_is_never_its_own_neighbour(index):
    assert [n.org_id for n in index.similar("o2", "ch_a", k=10)] == ["o5", "o4", "o3"]
    assert [n.org_id for n in index.similar("o3", "ch_b")] == []  # the only positive is itself
    assert [n.org_id for n in index.similar("o1", "ch_b")] == ["o3"]


def test_bad_queries(index):
    with pytest.raises(LookupError, match="organization 'o9' is not in the organization index"):
        index.similar("o9", "ch_a")
    with pytest.raises(RequestError, match="field 'characteristic': unknown characteristic 'zz'"):
        index.similar("o1", "zz")
    with pytest.raises(RequestError, match="field 'k': must be a whole number from 1 to 100; received 0"):
        index.similar("o1", "ch_a", k=0)


def test_side_files_round_trip(index, tmp_path):
    positives = pd.DataFrame({"org_id": ["o2"], "characteristic": ["ch_b"], "positives": [4],
                              "last_positive_on": [dt.date(2024, 5, 5)]})
    index.write(tmp_path / "organizations", positives, None)
    again = similar.OrganizationIndex.read(tmp_path / "organizations", CODES, "features")
    assert [n.org_id for n in again.similar("o1", "ch_b")] == ["o2"]
    assert again.similar("o1", "ch_b")[0].positives == 4
    fresh = similar.OrganizationIndex.read(tmp_path / "organizations", CODES, "features",
                                           positives=pd.DataFrame({"org_id": ["o4"], "characteristic": ["ch_b"],
                                                                   "positives": [1],
                                                                   "last_positive_on": [dt.date(2024, 6, 1)]}))
    assert [n.org_id for n in fresh.similar("o1", "ch_b")] == ["o4"]


def test_reason_names_industry_and_size_band_and_managers(index):
    found = index.similar("o1", "ch_a", k=3)  # o5 it 200, o2 it 150, o4 retail (size unknown)
    assert similar.similar_reason(found, {"it": "ИТ", "retail": "Розница"}) == (
        "сработало у 3 похожих организаций: ит, 100–250 сотрудников; там это удавалось менеджерам m7, m2"
    )
    assert similar.similar_reason(found[:1], {"it": "ИТ"}, with_managers=False) == (
        "сработало у 1 похожей организации: ит, 100–250 сотрудников"
    )
    assert similar.similar_reason([], {}) is None


def test_reason_with_one_manager_says_menedzheru():
    """One manager is «менеджеру M», not the plural «менеджерам M» the card showed for one name."""
    one = similar.Neighbour(org_id="o5", similarity=0.9, positives=2, last_positive_on=dt.date(2024, 4, 4),
                            managers=[("M-03", 2)], industry="it", employees=200.0)
    assert similar.similar_reason([one], {"it": "ИТ"}) == (
        "сработало у 1 похожей организации: ит, 100–250 сотрудников; там это удавалось менеджеру M-03"
    )


def test_reason_names_a_size_band_only_when_most_neighbours_are_in_it():
    """Sizes 40, 97 and 186 have their median in 50–100, but two of the three are not: the card said
    «сработало у 3 похожих организаций: 50–100 сотрудников» of them. A band is named, like the
    industry, only when at least half of the neighbours are in it."""
    def neighbour(org_id: str, employees: float) -> similar.Neighbour:
        return similar.Neighbour(org_id=org_id, similarity=0.9, positives=1, last_positive_on=dt.date(2024, 4, 4),
                                 managers=[], industry="", employees=employees)

    spread = [neighbour("a", 40.0), neighbour("b", 97.0), neighbour("c", 186.0)]
    assert similar.similar_reason(spread, {}) == "сработало у 3 похожих организаций"
    close = [neighbour("a", 60.0), neighbour("b", 97.0), neighbour("c", 186.0)]
    assert similar.similar_reason(close, {}) == "сработало у 3 похожих организаций: 50–100 сотрудников"


def test_neighbour_lift_compares_nearest_with_same_industry():
    # two industries; within "a", orgs 0-2 cluster together and share the positive, orgs 3-5 do not
    e = np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [0.2, 1]], dtype=np.float32)
    industry = np.array(["a"] * 6)
    past = np.array([[1], [1], [0], [0], [0], [0]], dtype=bool)
    active = np.ones(6, dtype=bool)
    later = np.array([[0], [0], [1], [0], [0], [0]], dtype=bool)  # org 2 later had it resonate
    result = similar.neighbour_lift(e, industry, past, active, later, k=2)
    # org 2's 2 nearest: orgs 1 and 0, both positive → rate 1; same-industry others: 2 of 5 → 0.4
    assert result == {"neighbour_rate": 1.0, "industry_rate": 0.4, "lift": 2.5, "queries": 1, "k": 2}


def test_neighbour_lift_without_queries_is_none():
    result = similar.neighbour_lift(np.eye(3), np.array(["a"] * 3), np.zeros((3, 1), bool), np.ones(3, bool),
                                    np.zeros((3, 1), bool), k=1)
    assert result["lift"] is None and result["queries"] == 0


@pytest.mark.parametrize(("employees", "band"), [(0, "до 10"), (9, "до 10"), (10, "10–50"), (249, "100–250"),
                                                 (6000, "более 5000"), (math.nan, None)])
def test_employee_band(employees, band):
    assert similar.employee_band(employees) == band


def test_card_neighbours_count_positives_among_the_nearest_organizations(index):
    # o1's 3 nearest of all: o5, o2, o4 (o3 is 4th); ch_a resonated at all three, ch_b only at o3
    found = index.card_neighbours("o1", ["ch_a", "ch_b"], k=3)
    assert [n.org_id for n in found["ch_a"]] == ["o5", "o2", "o4"]
    assert found["ch_b"] == []
    assert [n.org_id for n in index.card_neighbours("o1", ["ch_b"], k=4)["ch_b"]] == ["o3"]
    assert index.card_neighbours("o9", ["ch_a"]) == {}
