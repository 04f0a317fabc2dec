"""needs_rec.config: defaults, deep merge, and one clear ConfigError per kind of mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from needs_rec.config import Config, NetworkConfig, ThresholdConfig, load_config
from needs_rec.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_defaults_equal_dataclass_defaults() -> None:
    assert load_config() == Config()


def test_defaults_have_documented_values() -> None:
    config = load_config()
    assert config.thresholds.metric == "f1"
    assert config.thresholds.fallback == "global"
    assert config.thresholds.top_k == 5  # the card's cap, chosen by measurement (bench/quality.py)
    assert config.thresholds.min_selected == 1
    assert config.search.enabled and config.search.trials == 6
    assert config.split.validation_fraction == 0.15
    assert config.split.test_fraction == 0.15
    assert config.network.hidden_units == (256, 128)


def test_user_file_is_deep_merged_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "network:\n  dropout: 0.1\n  hidden_units: [64]\nthresholds:\n  top_k: 3\nseed: 7\n")
    config = load_config(path)
    assert config.network.dropout == 0.1
    assert config.network.hidden_units == (64,)
    assert config.network.batch_norm is True  # untouched default survives the merge
    assert config.thresholds.top_k == 3
    assert config.thresholds.metric == "f1"
    assert config.seed == 7


def test_fallback_accepts_global_or_probability(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "thresholds: {fallback: 0.25}")).thresholds.fallback == 0.25
    assert load_config(write(tmp_path, "thresholds: {fallback: global}")).thresholds.fallback == "global"


def test_exponent_without_dot_is_read_as_number(tmp_path: Path) -> None:
    # PyYAML reads `1e-3` as a string; the loader accepts it as the number it obviously is.
    assert load_config(write(tmp_path, "training: {learning_rate: 1e-3}")).training.learning_rate == 0.001


def test_empty_user_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("network: {dropuot: 0.1}", "unknown config key 'network.dropuot'; allowed keys under network: hidden_units"),
        ("foo: 1", "unknown config key 'foo'; allowed keys under top level: network, training"),
        ("network: {dropout: 1.5}", "config key 'network.dropout' must be a number in [0, 1), got 1.5"),
        ("network: {dropout: high}", "config key 'network.dropout' must be a number in [0, 1), got 'high'"),
        ("network: {batch_norm: 1}", "config key 'network.batch_norm' must be true or false, got 1"),
        ("network: {hidden_units: [64, 0]}", "'network.hidden_units[1]' must be an integer in [1, 65536], got 0"),
        ("training: {batch_size: 2.5}", "'training.batch_size' must be an integer in [1, 1000000], got 2.5"),
        ("training: {positive_weighting: bal}", "'training.positive_weighting' must be one of 'none', 'sqrt'"),
        ("thresholds: {metric: f3}", "config key 'thresholds.metric' must be one of 'f1', 'f0.5', 'f2', got 'f3'"),
        ("thresholds: {fallback: 2}", "'thresholds.fallback' must be one of 'global' or a number in [0, 1], got 2"),
        ("thresholds: {top_k: 0}", "'thresholds.top_k' must be an integer in [1, 1000000] or null, got 0"),
        ("thresholds: {top_k: 2, min_selected: 3}", "'thresholds.min_selected' must be at most 'thresholds.top_k'"),
        ("seed: -1", "config key 'seed' must be an integer in [0, 4294967295], got -1"),
        ("network: 3", "config key 'network' must be a mapping, got 3"),
        ("split: {validation_fraction: 0.45, test_fraction: 0.45}", "must sum to less than 0.9"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key_the_rule_and_the_value(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml' does not exist"):
        load_config(missing)


def test_unparsable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.yaml': not valid YAML \(line 2, column 1: expected ',' or ']'"):
        load_config(write(tmp_path, "network: [unclosed\n"))
    path = tmp_path / "config.yaml"
    path.write_bytes(b"network: \xff\n")
    with pytest.raises(ConfigError, match=r"config\.yaml': not UTF-8 text \(bad byte at offset 9\)"):
        load_config(path)


def test_a_yaml_alias_bomb_gives_a_short_message(tmp_path: Path) -> None:
    """9 nested anchors of 9 aliases: the message printed the whole expansion (226 MB, 3.8 GB of RAM)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "\n".join(lines) + "\nnetwork: *a8\n"))
    assert "config key 'a0'" in str(caught.value) or "unknown config key" in str(caught.value)
    assert len(str(caught.value)) < 400


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: a second `network:` section dropped the first without a word."""
    with pytest.raises(ConfigError, match=r"line 3, column 1: duplicate key 'network' \(first given on line 1\)"):
        load_config(write(tmp_path, "network:\n  dropout: 0.2\nnetwork:\n  wide: false\n"))
    with pytest.raises(ConfigError, match=r"line 3, column 3: duplicate key 'dropout'"):
        load_config(write(tmp_path, "network:\n  dropout: 0.2\n  dropout: 0.9\n"))


def test_non_mapping_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping of sections at top level, got list"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_to_dict_round_trips_through_json() -> None:
    config = Config(network=NetworkConfig(hidden_units=(32, 16)), thresholds=ThresholdConfig(fallback=0.4, top_k=5))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["network"]["hidden_units"] == [32, 16]
    assert Config.from_dict(data) == config


def test_from_dict_requires_every_key() -> None:
    data = Config().to_dict()
    del data["training"]["patience"]
    with pytest.raises(ConfigError, match=r"config key 'training\.patience' is missing"):
        Config.from_dict(data)
