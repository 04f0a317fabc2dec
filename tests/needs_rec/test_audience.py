"""The audience ranking rule on a CRM small enough to rank by hand, and its cumulative-gain evaluation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from needs_rec import audience, schema
from needs_rec.errors import RequestError

TODAY = dt.date(2024, 6, 20)


@pytest.fixture
def crm(tiny_dictionaries):
    orgs = pd.DataFrame({
        "org_id": ["o1", "o2", "o3"],
        "industry": ["it", "retail", "it"],
        "region": ["msk", "spb", "spb"],
        "client_since": ["2020-01-01", "", "2021-03-01"],
        "products_owned": ["crm", "", "erp"],
    })
    contacts = pd.DataFrame({
        "contact_id": ["c5", "c2", "c1", "c4", "c3"],  # not in id order: the population sorts them
        "org_id": ["o3", "o1", "o1", "o2", "o2"],
        "position": ["ceo"] * 5,
    })
    outcomes = pd.DataFrame({
        "contact_id": ["c3", "c4", "c1"],
        "occurred_on": ["2024-06-10", "2024-01-01", "2024-06-15"],
        "stage": ["lead", "lead", "demo"],
        "characteristic": ["ch_price", "ch_price", "ch_cloud"],
        "outcome": ["positive", "negative", "positive"],
        "manager_id": ["m1", "m2", ""],
    })
    data, _ = schema.validate({"organizations": orgs, "contacts": contacts, "outcomes": outcomes}, tiny_dictionaries)
    return data


@pytest.fixture
def population(crm, tiny_dictionaries):
    return audience.Population.from_crm(crm, tiny_dictionaries)


#: P(ch_price) per contact in population order c1..c5
PRICE = np.array([0.9, 0.5, 0.7, 0.7, 0.2], dtype=np.float32)


def ranked(population, stage="lead", **kwargs):
    filters = audience.Filters(**{k: v for k, v in kwargs.items() if k != "limit"})
    result = audience.rank(population, PRICE, "ch_price", stage, filters=filters, limit=kwargs.get("limit"),
                           today=TODAY)
    return list(result.to_frame(population)["contact_id"]), result.total


def test_population_is_in_contact_id_order_with_org_facts(population):
    assert list(population.contact_id) == ["c1", "c2", "c3", "c4", "c5"]
    assert list(population.org_id) == ["o1", "o1", "o2", "o2", "o3"]
    assert list(population.is_client) == [True, True, False, False, True]


def test_owners_of_the_product_are_left_out_before_the_last_stage_and_ties_go_to_the_smaller_id(population):
    # o1 owns "crm", ch_price's product: c1 and c2 are left out at "lead"; c3 and c4 tie at 0.7
    assert ranked(population, "lead") == (["c3", "c4", "c5"], 3)


def test_at_the_last_stage_owners_are_kept(population):
    assert ranked(population, "deal") == (["c1", "c3", "c4", "c2", "c5"], 5)
    assert ranked(population, "deal", limit=2) == (["c1", "c3"], 5)


def test_filters_industry_region_clients(population):
    assert ranked(population, "lead", industry="IT") == (["c5"], 1)
    assert ranked(population, "deal", region="spb") == (["c3", "c4", "c5"], 3)
    assert ranked(population, "lead", clients="only") == (["c5"], 1)
    assert ranked(population, "lead", clients="exclude") == (["c3", "c4"], 2)


def test_recently_presented_contacts_are_left_out_on_request(population):
    # c3 was presented ch_price 10 days before TODAY, c4 in January
    assert ranked(population, "lead", exclude_presented_days=30) == (["c4", "c5"], 2)
    assert ranked(population, "lead", exclude_presented_days=5) == (["c3", "c4", "c5"], 3)


def test_the_answer_shape_and_a_full_matrix_give_the_same_ranking(population):
    matrix = np.zeros((5, 4), dtype=np.float32)
    matrix[:, 0] = PRICE
    result = audience.rank(population, matrix, "ch_price", "deal", limit=2)
    assert result.to_json(population) == [
        {"contact_id": "c1", "org_id": "o1", "probability": 0.9, "rank": 1},
        {"contact_id": "c3", "org_id": "o2", "probability": 0.7, "rank": 2},
    ]


@pytest.mark.parametrize(
    ("characteristic", "stage", "kwargs", "message"),
    [
        ("nope", "lead", {}, "field 'characteristic': unknown characteristic 'nope'"),
        ("ch_price", "nowhere", {}, "field 'stage': unknown stage 'nowhere'; allowed: lead, demo, deal"),
        ("ch_integration", "demo", {}, "'ch_integration' has no talking point at stage 'demo'"),
        ("ch_price", "lead", {"limit": 0}, "field 'limit': must be a whole number >= 1; received 0"),
    ],
)
def test_bad_requests_name_the_field(population, characteristic, stage, kwargs, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        audience.rank(population, PRICE, characteristic, stage, **kwargs)


def test_bad_filters_name_the_field():
    with pytest.raises(RequestError, match="field 'clients': 'some' is not allowed; use 'only' or 'exclude'"):
        audience.Filters(clients="some")
    with pytest.raises(RequestError, match="field 'exclude_presented_days'"):
        audience.Filters(exclude_presented_days=0)
    with pytest.raises(RequestError, match="from 1 to 36500; received 36501"):
        audience.Filters(exclude_presented_days=36501)


def test_top_order_matches_a_full_stable_sort():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 20, 1000).astype(np.float32)  # many ties
    full = np.argsort(-values, kind="stable")
    for limit in (1, 7, 100, 999, 1000, 5000):
        assert list(audience.top_order(values, limit)) == list(full[:limit])


def test_gain_counts_positives_in_the_top_share_of_each_audience(tiny_dictionaries):
    # one stage ("lead"), ch_price: 4 episodes, positives at ranks 1 and 3 of the network, 2 and 4 of the other
    y = np.zeros((4, 4), dtype=np.uint8)
    y[[0, 2], 0] = 1
    network = np.zeros((4, 4))
    network[:, 0] = [0.9, 0.8, 0.7, 0.1]
    other = np.zeros((4, 4))
    other[:, 0] = [0.2, 0.9, 0.1, 0.8]
    owns = np.zeros((4, 4), dtype=bool)
    gain = audience.audience_gain(
        y, {"network": network, "other": other}, np.array(["lead"] * 4), owns, ["lead", "demo", "deal"],
        tiny_dictionaries.offered(), shares=(0.25, 0.5, 0.75), min_positives=2,
    )
    assert gain["audiences"] == 1 and gain["positives"] == 2
    assert gain["methods"]["network"]["gain"] == [0.5, 0.5, 1.0]
    assert gain["methods"]["network"]["lift"] == [2.0, 1.0, 1.3333]
    assert gain["methods"]["other"]["gain"] == [0.0, 0.0, 0.5]


def test_gain_leaves_out_owners_before_the_last_stage(tiny_dictionaries):
    y = np.zeros((4, 4), dtype=np.uint8)
    y[[0, 1], 0] = 1
    p = np.zeros((4, 4))
    p[:, 0] = [0.9, 0.1, 0.5, 0.4]
    owns = np.zeros((4, 4), dtype=bool)
    owns[0, 0] = True  # the top-scored positive is an owner: not in the audience at "lead"
    gain = audience.audience_gain(y, {"network": p}, np.array(["lead"] * 4), owns, ["lead", "demo", "deal"],
                                  tiny_dictionaries.offered(), shares=(1 / 3,), min_positives=1)
    assert gain["episodes"] == 3 and gain["positives"] == 1
    assert gain["methods"]["network"]["gain"] == [0.0]


def test_owns_product_matrix(tiny_dictionaries):
    owned = audience.owns_product_matrix(["crm", "", "crm;erp"], tiny_dictionaries)
    assert owned.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]
