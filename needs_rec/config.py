"""Training configuration: typed, frozen sections read from YAML and validated once.

`load_config` reads the packaged defaults (`default_config.yaml`), deep-merges a user YAML over
them and turns the result into a `Config`. Every value is checked here, once, against the rule
declared next to its field (`_spec`), so code downstream can trust the types and ranges. Errors name
the dotted key, what is allowed and what was received.

Adding a section: write a frozen dataclass whose fields use `_spec(...)`, add it as a field of
`Config` (and to `default_config.yaml`); loading, validation and `to_dict` pick it up.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from needs_rec import yaml_text
from needs_rec.errors import ConfigError, shown, yaml_problem

DEFAULT_CONFIG_FILE = "default_config.yaml"

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "elu", "selu", "swish", "tanh", "leaky_relu")
POSITIVE_WEIGHTINGS: tuple[str, ...] = ("none", "sqrt", "balanced")
WIDE_PATHS: tuple[str, ...] = ("catalogue", "per_label")
THRESHOLD_METRICS: tuple[str, ...] = ("f1", "f0.5", "f2")
THRESHOLD_STRATEGIES: tuple[str, ...] = ("per_label", "global")
FALLBACK_GLOBAL = "global"


@dataclass(frozen=True)
class _Rule:
    """What one field accepts: numeric bounds, allowed strings, a sequence length."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    min_length: int = 0
    max_length: int | None = None

    def describe_range(self) -> str:
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{lo}, {hi}{right}"

    def in_range(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def _fmt(number: float) -> str:
    """1000000 rather than 1e+06, 0.001 rather than 1e-03."""
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e16 else repr(float(number))


def _spec(default: Any, **rule: Any) -> Any:
    """A dataclass field with its default and its validation rule (see `_Rule`)."""
    return field(default=default, metadata={"rule": _Rule(**rule)})


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the dense network: float inputs → Dense blocks → one sigmoid per label."""

    hidden_units: tuple[int, ...] = _spec((256, 128), low=1, high=65536, max_length=16)
    dropout: float = _spec(0.5, low=0.0, high=1.0, high_open=True)
    input_dropout: float = _spec(0.1, low=0.0, high=1.0, high_open=True)
    l2: float = _spec(0.0, low=0.0, high=1.0)
    batch_norm: bool = _spec(True)
    activation: str = _spec("relu", choices=ACTIVATIONS)
    #: Members trained side by side inside one Keras model, their probabilities averaged.
    ensemble_size: int = _spec(1, low=1, high=32)
    #: Wide & deep: a linear path from the inputs straight to the labels' logits, beside the
    #: Dense blocks, so the main effects are there from the start and the blocks learn the
    #: interactions on top.
    wide: bool = _spec(True)
    #: What the wide path goes through. catalogue: inputs → one logit term per product, need and
    #: need category of the dictionaries → the characteristics linked to them (a main effect is
    #: learned once per product or need and shared by its characteristics); per_label: one free
    #: linear model per characteristic. Measured in bench/README.md (quality): catalogue lifts
    #: every firm shape, most the positive-only and rare ones, where per-label weights overfit.
    #: Without dictionaries (`train_network(links=None)`) the path is per label.
    wide_path: str = _spec("catalogue", choices=WIDE_PATHS)


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation: Adam with early stopping on validation loss (best weights restored)."""

    batch_size: int = _spec(512, low=1, high=1_000_000)
    max_epochs: int = _spec(100, low=1, high=100_000)
    learning_rate: float = _spec(1e-3, low=0.0, high=1.0, low_open=True)
    patience: int = _spec(10, low=0, high=100_000)
    #: An epoch improves on the best validation loss only if it is lower by more than this.
    min_delta: float = _spec(1e-4, low=0.0, high=1.0)
    #: Weight of a positive cell in the loss: none = 1, balanced = negatives/positives of its
    #: label, sqrt = the square root of that; capped at `max_positive_weight`.
    positive_weighting: str = _spec("sqrt", choices=POSITIVE_WEIGHTINGS)
    max_positive_weight: float = _spec(10.0, low=1.0, high=1e6)
    label_smoothing: float = _spec(0.0, low=0.0, high=0.5, high_open=True)
    #: Halve the learning rate after this many epochs without improvement (0 = never).
    reduce_lr_patience: int = _spec(5, low=0, high=100_000)


@dataclass(frozen=True)
class ThresholdConfig:
    """How probabilities are cut into a selected set (see `needs_rec.thresholds`)."""

    metric: str = _spec("f1", choices=THRESHOLD_METRICS)
    #: per_label: one cut per label; global: one cut tuned on all labels pooled.
    strategy: str = _spec("per_label", choices=THRESHOLD_STRATEGIES)
    min_positives: int = _spec(10, low=1, high=1_000_000_000)
    #: For labels under `min_positives`: "global" (pooled cut) or a fixed probability.
    fallback: str | float = _spec(FALLBACK_GLOBAL, low=0.0, high=1.0, choices=(FALLBACK_GLOBAL,))
    #: The card's cap: at most this many selected characteristics per contact (null: no cap).
    #: Chosen by measurement (bench/quality.py, precision of what is shown vs how many).
    top_k: int | None = _spec(5, low=1, high=1_000_000)
    #: Always select at least this many of the most probable labels per row (0 = no floor).
    min_selected: int = _spec(1, low=0, high=1_000_000)
    #: Pseudo-positives pulling each per-label cut towards the pooled cut (logit scale): a label
    #: with n validation positives keeps n / (n + shrinkage) of its own cut; 0 = no shrinkage.
    shrinkage: float = _spec(20.0, low=0.0, high=1e9)


@dataclass(frozen=True)
class SearchConfig:
    """The per-firm search of the network's configuration on the validation split (`needs_rec.tuning`).

    Optuna's TPE sampler (seeded) proposes `trials` configurations (the first is the `network` /
    `training` sections as given); each trains on at most `max_rows` training rows for at most
    `trial_epochs` epochs and is scored by NDCG@5 on the validation split; the best one is then
    trained on the whole training split. `budget_s` caps the search's wall time: when it cuts the
    search short the manifest says so (only then can the result depend on machine speed).
    """

    enabled: bool = _spec(True)
    trials: int = _spec(6, low=1, high=10_000)
    budget_s: float = _spec(100.0, low=0.0, high=1e6, low_open=True)
    max_rows: int = _spec(20_000, low=100, high=100_000_000)
    trial_epochs: int = _spec(20, low=1, high=100_000)
    trial_patience: int = _spec(3, low=0, high=100_000)


@dataclass(frozen=True)
class SplitConfig:
    """Shares of episodes, by time, held out for validation and test."""

    validation_fraction: float = _spec(0.15, low=0.0, high=0.5, low_open=True, high_open=True)
    test_fraction: float = _spec(0.15, low=0.0, high=0.5, low_open=True, high_open=True)


@dataclass(frozen=True)
class Config:
    """Everything one training run needs besides data; stored in the model manifest."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = _spec(0, low=0, high=2**32 - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples become lists), e.g. for the manifest."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Validate a complete nested mapping (all keys present) into a `Config`."""
        config = _build(cls, data, "")
        _check_cross_fields(config)
        return config


def load_config(path: str | Path | None = None) -> Config:
    """Packaged defaults, with the YAML file at `path` (if any) deep-merged over them, validated.

    Raises ConfigError naming the file when it is missing or not YAML, and naming the dotted key,
    the allowed keys, type or range and the received value for any bad entry.
    """
    merged = default_config_dict()
    if path is not None:
        user = _read_yaml(Path(path))
        merged = _deep_merge(merged, user)
    return Config.from_dict(merged)


def default_config_dict() -> dict[str, Any]:
    """The packaged defaults as a raw nested dict (before validation)."""
    text = (Path(__file__).resolve().parent / DEFAULT_CONFIG_FILE).read_text(encoding="utf-8")
    data = yaml_text.load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"packaged {DEFAULT_CONFIG_FILE} must hold a mapping, got {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist or is not a file")
    try:
        data = yaml_text.load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r}: {yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections at top level, got {type(data).__name__}"
        )
    return data


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, recursing into mappings present in both; lists are replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Validate `data` against dataclass `cls` (recursing into sections) and instantiate it."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key {where!r} must be a mapping, got {shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}; allowed keys under {where}: {', '.join(fields)}"
            )
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in data:
            raise ConfigError(f"config key {key!r} is missing")
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[name] = _build(hint, data[name], key + ".")
        else:
            values[name] = _convert(key, data[name], hint, f.metadata.get("rule", _Rule()))
    return cls(**values)


def _convert(key: str, value: Any, hint: Any, rule: _Rule) -> Any:
    """Check one leaf value against its annotation and rule; return it in canonical form."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"config key {key!r} must be {_describe(hint, rule)}, got None")
    errors: list[str] = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _convert_one(key, value, option, rule)
        except _Mismatch:
            continue
        except ConfigError as exc:  # right type, wrong value: keep the most specific message
            errors.append(str(exc))
    if errors and len(options) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"config key {key!r} must be {_describe(hint, rule)}, got {shown(value)}")


class _Mismatch(Exception):
    """The value is not of this annotation's type (try the next union member)."""


def _convert_one(key: str, value: Any, hint: Any, rule: _Rule) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        _check_range(key, value, rule, "an integer")
        return value
    if hint is float:
        number = _as_float(value)
        if number is None:
            raise _Mismatch
        _check_range(key, number, rule, "a number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch
        if rule.choices is not None and value not in rule.choices:
            allowed = ", ".join(repr(c) for c in rule.choices)
            raise ConfigError(f"config key {key!r} must be one of {allowed}, got {shown(value)}")
        return value
    if typing.get_origin(hint) is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise _Mismatch
        if len(value) < rule.min_length or (rule.max_length is not None and len(value) > rule.max_length):
            raise ConfigError(
                f"config key {key!r} must be a list of {rule.min_length} to {rule.max_length} items, got {shown(value)}"
            )
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_convert_one(f"{key}[{i}]", item, item_type, rule))
            except _Mismatch:
                raise ConfigError(
                    f"config key {key!r} must be {_describe(hint, rule)}, got {shown(value)} (item {i}: {shown(item)})"
                ) from None
        return tuple(items)
    raise TypeError(f"config field {key!r} has an unsupported annotation {hint!r}")  # a bug, not user input


def _as_float(value: Any) -> float | None:
    """A float from an int, float or numeric string ("1e-3": PyYAML reads exponents without a dot as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _check_range(key: str, value: float, rule: _Rule, kind: str) -> None:
    if not rule.in_range(value):
        raise ConfigError(f"config key {key!r} must be {kind} in {rule.describe_range()}, got {shown(value)}")


def _describe(hint: Any, rule: _Rule) -> str:
    """Human description of what an annotation + rule accepts, for error messages."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    parts = []
    for option in options:
        if option is type(None):
            parts.append("null")
        elif option is bool:
            parts.append("true or false")
        elif option is int:
            parts.append(f"an integer in {rule.describe_range()}")
        elif option is float:
            parts.append(f"a number in {rule.describe_range()}")
        elif option is str:
            parts.append("one of " + ", ".join(repr(c) for c in rule.choices) if rule.choices else "a string")
        elif typing.get_origin(option) is tuple:
            parts.append(f"a list of integers in {rule.describe_range()}")
        else:
            parts.append(str(option))
    return " or ".join(parts)


def _check_cross_fields(config: Config) -> None:
    """Rules that involve more than one key."""
    cuts = config.thresholds
    if cuts.top_k is not None and cuts.min_selected > cuts.top_k:
        raise ConfigError(
            f"config key 'thresholds.min_selected' must be at most 'thresholds.top_k' ({cuts.top_k}), "
            f"got {cuts.min_selected}"
        )
    split = config.split
    if split.validation_fraction + split.test_fraction >= 0.9:
        raise ConfigError(
            "config keys 'split.validation_fraction' + 'split.test_fraction' must sum to less than 0.9 "
            f"(some episodes must be left to train on), got {split.validation_fraction + split.test_fraction:g}"
        )


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value
