"""The project's YAML reading: safe loading, and a key given twice in one mapping refused."""

from __future__ import annotations

import pytest
from yaml.constructor import ConstructorError

from needs_rec import yaml_text
from needs_rec.errors import yaml_problem


def test_it_reads_what_safe_load_reads() -> None:
    assert yaml_text.load("a: 1\nb: [x, {c: null}]\n") == {"a": 1, "b": ["x", {"c": None}]}
    assert yaml_text.load("") is None


def test_a_repeated_key_names_both_lines() -> None:
    with pytest.raises(ConstructorError) as caught:
        yaml_text.load("top:\n  a: 1\n  b: 2\n  a: 3\n")
    assert yaml_problem(caught.value) == (
        "not valid YAML (line 4, column 3: duplicate key 'a' (first given on line 2); give each key once)"
    )


def test_keys_equal_as_values_count_as_repeated() -> None:
    with pytest.raises(ConstructorError, match="duplicate key 'a'"):
        yaml_text.load("a: 1\n'a': 2\n")  # a quoted key is the same key


def test_a_merge_may_be_overridden_and_may_not_run_code() -> None:
    text = "base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n"
    assert yaml_text.load(text)["item"] == {"x": 1, "y": 3}
    with pytest.raises(ConstructorError):
        yaml_text.load("x: !!python/object/apply:os.system ['true']\n")
