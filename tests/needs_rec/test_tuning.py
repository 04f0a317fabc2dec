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
