"""`needs_rec.errors`: how messages show the values they echo (bounded, readable)."""

from __future__ import annotations

import pytest
import yaml

from needs_rec.errors import RequestError, clipped, shown, yaml_problem


@pytest.mark.parametrize(("text", "limit", "mark", "expected"), [
    ("short", 40, "...", "short"),
    ("x" * 40, 40, "...", "x" * 40),
    ("x" * 41, 40, "...", "x" * 37 + "..."),
    ("Киселёва Анна Петровна", 10, "…", "Киселёва …"),
])
def test_clipped_keeps_the_limit_and_marks_the_cut(text: str, limit: int, mark: str, expected: str) -> None:
    got = clipped(text, limit, mark)
    assert got == expected and len(got) <= limit


def test_shown_bounds_a_huge_nested_value() -> None:
    bomb = [["x" * 1000] * 1000] * 1000  # what a YAML alias bomb expands to
    text = shown(bomb)
    assert len(text) <= 200 and text.startswith("[[")
    assert shown("lead") == "'lead'"


def test_yaml_problem_names_line_and_column() -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load("a: [1, 2\nb: 3\n")
    assert yaml_problem(caught.value).startswith("not valid YAML (line ")
    not_utf8 = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")
    assert yaml_problem(not_utf8).startswith("not UTF-8 text (bad byte at offset 0)")


def test_a_request_error_without_a_field_has_none() -> None:
    assert RequestError("body: empty").field is None and RequestError("x", field="a.b").field == "a.b"
