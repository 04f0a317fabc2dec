"""needs_rec.tuning: the per-firm search is deterministic, starts from the given config, records itself."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from needs_rec import tuning
from needs_rec.config import Config, NetworkConfig, SearchConfig, TrainingConfig


def _data(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    logits = np.stack([x[:, 0] * 2, x[:, 1] * x[:, 2] * 2, x[:, 3] - 1, -x[:, 4]], axis=1)
    y = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return x[:400], y[:400], x[400:], y[400:]


def _config(trials: int = 3) -> Config:
    return Config(
        network=NetworkConfig(hidden_units=(16, 8)),
        training=TrainingConfig(batch_size=64, max_epochs=6),
        search=SearchConfig(trials=trials, budget_s=600.0, max_rows=300, trial_epochs=4, trial_patience=2),
    )


def test_search_is_deterministic_under_a_seed() -> None:
    x, y, xv, yv = _data()
    first = tuning.search(x, y, xv, yv, _config(), seed=5)
    second = tuning.search(x, y, xv, yv, _config(), seed=5)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]
    assert first.best == second.best and first.config == second.config
    assert not first.stopped_by_budget and first.rows == 300


def test_first_trials_are_the_given_config_and_the_plain_mlp() -> None:
    x, y, xv, yv = _data()
    result = tuning.search(x, y, xv, yv, _config(), seed=1)
    assert len(result.trials) == 3
    assert result.trials[0].params == tuning.params_of(_config())
    assert result.trials[1].params == dict(tuning.PLAIN_TRIAL)
    best = max(t.value for t in result.trials)
    assert result.chosen.value == best
    assert tuning.params_of(result.config) == result.chosen.params
    # only the searched keys change; the rest of the config is the caller's
    assert result.config.training.max_epochs == 6 and result.config.search == _config().search


def test_to_dict_records_the_search_for_the_manifest() -> None:
    x, y, xv, yv = _data()
    result = tuning.search(x, y, xv, yv, _config(trials=2), seed=0)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["objective"] == "validation ndcg@5"
    assert record["chosen_trial"] == result.best and len(record["trials"]) == 2
    assert record["chosen"] == result.chosen.params
    assert "chose trial" in result.summary()


def test_budget_stops_the_search_and_says_so() -> None:
    x, y, xv, yv = _data()
    config = _config(trials=50)
    config = dataclasses.replace(config, search=dataclasses.replace(config.search, budget_s=0.01))
    result = tuning.search(x, y, xv, yv, config, seed=0)
    assert 1 <= len(result.trials) < 50 and result.stopped_by_budget


@pytest.mark.parametrize("params", [dict(tuning.PLAIN_TRIAL), tuning.params_of(Config())])
def test_apply_params_round_trips(params: dict) -> None:
    assert tuning.params_of(tuning.apply_params(Config(), params)) == params


def _trial(number: int, hidden: str, value: float, wide: bool = False) -> tuning.TrialRecord:
    return tuning.TrialRecord(number, {**tuning.PLAIN_TRIAL, "hidden_units": hidden, "wide": wide}, value, 3, 1.0)


def test_a_tie_goes_to_the_network_cheapest_to_serve() -> None:
    """Within TIE_SHARE of the best validation NDCG@5, the fewest weights win; beyond it, the better trial."""
    big, small = _trial(0, "1024-512", 0.1553), _trial(1, "256-256", 0.1550)  # 0.2% apart: a tie
    assert tuning.choose([big, small], n_inputs=359, n_outputs=67) is small
    clearly = _trial(2, "1024-512", 0.1600)  # 3% better than the small one: not a tie
    assert tuning.choose([small, clearly], n_inputs=359, n_outputs=67) is clearly
    same_shape = [_trial(3, "256-128", 0.1552), _trial(4, "256-128", 0.1553)]
    assert tuning.choose(same_shape, n_inputs=359, n_outputs=67).number == 4  # equally cheap: the better
    weights = tuning.network_weights({"hidden_units": "256-128", "wide": True}, 10, 4)
    assert weights == 10 * 256 + 256 * 128 + 128 * 4 + 10 * 4
