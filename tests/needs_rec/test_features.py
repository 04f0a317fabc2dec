"""Feature encoding: dictionary vocabularies, unknown and missing values, numbers, derived link features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from needs_rec import features, schema
from needs_rec.errors import NotFittedError


def _frame(**columns: list) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {name: [np.nan] * n if name in schema.NUMERIC_INPUTS else [""] * n for name in schema.MODEL_INPUT_NAMES}
    base.update(columns)
    return pd.DataFrame(base)


def _column(encoder: features.FeatureEncoder, x: np.ndarray, name: str) -> np.ndarray:
    return x[:, encoder.feature_names.index(name)]


@pytest.fixture
def encoder(tiny_dictionaries):
    train = _frame(employees=[10.0, 100.0, 1000.0, np.nan], stage=["a", "a", "a", "a"])
    return features.FeatureEncoder(tiny_dictionaries).adapt(train)


def test_codes_are_normalised_and_unknown_and_missing_have_their_own_slots(encoder, tiny_dictionaries):
    stage = tiny_dictionaries.stage_codes[0]
    x = encoder.encode_frame(_frame(stage=[f"  {stage.upper()} ", "no-such-stage", ""]))
    assert _column(encoder, x, f"stage={stage}").tolist() == [1.0, 0.0, 0.0]
    assert _column(encoder, x, "stage=<unknown>").tolist() == [0.0, 1.0, 0.0]
    assert _column(encoder, x, "stage=<missing>").tolist() == [0.0, 0.0, 1.0]
    # exactly one slot of the stage block is hot in every row
    block = [i for i, n in enumerate(encoder.feature_names) if n.startswith("stage=")]
    assert x[:, block].sum(axis=1).tolist() == [1.0, 1.0, 1.0]


def test_multi_valued_fields_are_multi_hot_with_unknown_bucket(encoder, tiny_dictionaries):
    needs = [n.code for n in tiny_dictionaries.needs]
    x = encoder.encode_frame(_frame(interests=[f"{needs[0]};{needs[1]}", f" {needs[0].upper()} ;bogus;", ""]))
    assert _column(encoder, x, f"interests={needs[0]}").tolist() == [1.0, 1.0, 0.0]
    assert _column(encoder, x, f"interests={needs[1]}").tolist() == [1.0, 0.0, 0.0]
    assert _column(encoder, x, "interests=<unknown>").tolist() == [0.0, 1.0, 0.0]


def test_need_match_counts_interests_each_characteristic_answers(encoder, tiny_dictionaries):
    chars = tiny_dictionaries.characteristics
    j = next(i for i, ch in enumerate(chars) if ch.needs)
    need = chars[j].needs[0]
    x = encoder.encode_frame(_frame(interests=[need, ""]))
    assert _column(encoder, x, f"need_match#{j}").tolist() == [pytest.approx(1 / 3), 0.0]


def test_owned_product_marks_its_characteristics(encoder, tiny_dictionaries):
    chars = tiny_dictionaries.characteristics
    product = chars[0].product
    x = encoder.encode_frame(_frame(products_owned=[product, ""]))
    for j, ch in enumerate(chars):
        expected = [1.0 if ch.product == product else 0.0, 0.0]
        assert _column(encoder, x, f"owned_product#{j}").tolist() == expected


def test_numbers_are_log_normalised_with_train_statistics_and_missing_flag(encoder):
    x = encoder.encode_frame(_frame(employees=[10.0, np.nan, -5.0]))
    logs = np.log1p([10.0, 100.0, 1000.0])  # the train values (NaN excluded)
    z = (np.log1p(10.0) - logs.mean()) / logs.std()
    assert _column(encoder, x, "employees:z")[0] == pytest.approx(z, rel=1e-4)
    assert _column(encoder, x, "employees:missing").tolist() == [0.0, 1.0, 0.0]
    assert _column(encoder, x, "employees:z")[1] == 0.0  # missing encodes as 0 plus the flag
    stats = encoder.stats_dict()["employees"]
    assert stats["mean"] == pytest.approx(logs.mean(), rel=1e-6)


def test_client_tenure_from_dates_and_unparseable_dates_are_missing(encoder):
    x = encoder.encode_frame(
        _frame(client_since=["2020-01-15", "", "garbage"], occurred_on=["2024-01-15", "2024-01-15", "2024-01-15"])
    )
    assert _column(encoder, x, "client_years:missing").tolist() == [0.0, 1.0, 1.0]


def test_absent_columns_count_as_missing(encoder):
    x = encoder.encode_frame(pd.DataFrame({"stage": ["x"]}))
    assert x.shape == (1, encoder.width)
    assert _column(encoder, x, "employees:missing").tolist() == [1.0]
    assert _column(encoder, x, "position=<missing>").tolist() == [1.0]


def test_unfitted_encoder_refuses_to_encode(tiny_dictionaries):
    encoder = features.FeatureEncoder(tiny_dictionaries)
    with pytest.raises(NotFittedError, match="adapt"):
        encoder.encode_frame(_frame(stage=["a"]))


def test_width_matches_feature_names_and_vocabulary_sizes(encoder, tiny_dictionaries):
    x = encoder.encode_frame(_frame(stage=["a"]))
    assert x.shape[1] == encoder.width == len(encoder.feature_names)
    assert sum(n.startswith("position=") for n in encoder.feature_names) == len(tiny_dictionaries.positions) + 2
