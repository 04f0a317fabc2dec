"""needs_rec.drift: training profiles, live counting, L∞ / Jensen–Shannon distances and the flag."""

from __future__ import annotations

import math

import numpy as np
import pytest
from model_factory import sample_frame

from needs_rec import drift, schema


def _rows(frame) -> list[list]:
    return frame[list(schema.MODEL_INPUT_NAMES)].to_numpy(dtype=object).tolist()


EDGES = {"employees": [100.0, 1000.0, 3000.0], "revenue_mln": [50.0, 150.0], "founded_year": [2000.0, 2010.0]}


def test_profile_shares_are_hand_countable(tiny_dictionaries) -> None:
    frame = sample_frame(tiny_dictionaries, 4, seed=0)
    frame["industry"] = ["it", "it", "zzz", ""]
    frame["interests"] = ["speed", "speed;scale", "", "nope"]
    frame["employees"] = [50.0, 500.0, np.nan, 5000.0]
    profile = drift.training_profile(frame, tiny_dictionaries, EDGES)["fields"]
    industry = dict(zip(profile["industry"]["categories"], profile["industry"]["shares"], strict=True))
    assert industry["it"] == 0.5 and industry[drift.UNKNOWN] == 0.25 and industry[drift.MISSING] == 0.25
    interests = dict(zip(profile["interests"]["categories"], profile["interests"]["shares"], strict=True))
    assert interests["speed"] == 0.4 and interests["scale"] == 0.2 and interests[drift.UNKNOWN] == 0.2
    assert interests[drift.NONE] == 0.2
    assert profile["employees"]["shares"] == [0.25, 0.25, 0.25, 0.0, 0.25]  # missing, <100, <1000, <3000, more


def test_distances() -> None:
    assert drift.linf([0.5, 0.5], [0.2, 0.8]) == pytest.approx(0.3)
    assert drift.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.jensen_shannon([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    expected = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert drift.jensen_shannon(p, q) == pytest.approx(expected)


def _monitor(dicts, **kwargs):
    profile = drift.training_profile(sample_frame(dicts, 3000, seed=1), dicts, EDGES)
    return drift.Monitor(profile, **kwargs)


def test_an_unshifted_stream_is_not_flagged_and_a_shifted_one_is(tiny_dictionaries) -> None:
    calm = _monitor(tiny_dictionaries, window=1000, min_rows=200)
    for row in _rows(sample_frame(tiny_dictionaries, 1500, seed=2)):
        calm.observe(row)
    result = calm.distances()
    assert not any(flag for _, _, flag in result.values()), result
    assert result["industry"][0] == "linf" and result["employees"][0] == "jensen_shannon"

    shifted = _monitor(tiny_dictionaries, window=1000, min_rows=200)
    live = sample_frame(tiny_dictionaries, 1500, seed=2)
    moved = np.random.default_rng(3).random(len(live)) < 0.3
    live.loc[moved, "industry"] = "retail"  # 30% of requests moved to one industry
    live.loc[moved, "employees"] = 4500.0  # ... and, for the numbers, to large firms
    for row in _rows(live):
        shifted.observe(row)
    result = shifted.distances()
    flagged = {name for name, (_, _, flag) in result.items() if flag}
    assert flagged == {"industry", "employees"}, result
    assert result["industry"][1] > 0.2


def test_nothing_is_judged_before_min_rows_and_the_window_slides(tiny_dictionaries) -> None:
    monitor = _monitor(tiny_dictionaries, window=100, min_rows=50)
    row = _rows(sample_frame(tiny_dictionaries, 1, seed=4))[0]
    for _ in range(49):
        monitor.observe(row)
    assert all(value is None for _, value, _ in monitor.distances().values())
    for _ in range(300):
        monitor.observe(row)
    assert 100 <= monitor.window_rows < 200  # the current block plus the previous one
    assert all(value is not None and not math.isnan(value) for _, value, _ in monitor.distances().values())


def test_counts_shared_by_other_workers_judge_as_one_stream(tiny_dictionaries) -> None:
    """Two workers each seeing half of a shifted stream: one worker's distances with the other's `state()`
    added equal one monitor that saw it all (and neither half alone reaches min_rows)."""
    live = sample_frame(tiny_dictionaries, 300, seed=2)
    moved = np.random.default_rng(3).random(len(live)) < 0.3
    live.loc[moved, "industry"] = "retail"
    rows = _rows(live)
    whole, first, second = (_monitor(tiny_dictionaries, window=1000, min_rows=200) for _ in range(3))
    for i, row in enumerate(rows):
        whole.observe(row)
        (first if i % 2 else second).observe(row)
    assert all(value is None for _, value, _ in first.distances().values())  # 150 rows: too few alone
    merged = first.distances([second.state()])
    expected = whole.distances()
    assert merged.keys() == expected.keys() and merged["industry"][2] is True
    for name, (measure, value, flag) in expected.items():
        assert merged[name][0] == measure and merged[name][2] == flag and merged[name][1] == pytest.approx(value)
    assert first.ordered_fields == whole.ordered_fields and second.state()[0] == 150
