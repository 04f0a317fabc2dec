"""The row rules (`needs_rec.schema.rows`) and the whole-table check agree: one row checked alone gets
the values and the messages that row gets as a one-row table."""

from __future__ import annotations

import datetime as dt
import itertools

import pandas as pd
import pytest

from needs_rec import schema
from needs_rec.errors import DataError
from needs_rec.schema.rows import check_row, parse_date, text_value, text_values

DATES = ["2024-05-02", "2024-5-2", "2024-05-02T10:00", "2024-05-02 23:59:59", " 2024-05-02 ", "2024-13-01",
         "2023-02-29", "2024-02-29", "02.05.2024", "20240502", "1677-12-31", "1678-01-01", "2261-12-31",
         "2262-01-01", "2024-05-02x", "", "２０２４-05-02", "2024-W18-4"]
STAGES = ["demo", " DEMO ", "", "nope"]
OUTCOMES = ["positive", "Negative ", "", "maybe"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-02", dt.date(2024, 5, 2)),
        ("2024-5-2", dt.date(2024, 5, 2)),
        ("2024-05-02T10:30", dt.date(2024, 5, 2)),
        ("2024-05-02 10:30:00", dt.date(2024, 5, 2)),
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("2023-02-29", None),
        ("2024-13-01", None),
        ("20240502", None),  # date.fromisoformat would take it; a CSV date may not
        ("2024-W18-4", None),
        ("1677-12-31", None),
        ("2262-01-01", None),
        ("２０２４-05-02", None),
        ("2024-05-02x", None),
        ("2024-05-02 00:00:00.000000", dt.date(2024, 5, 2)),  # a Parquet timestamp cast to text
        ("2024-05-02 10:30:00.5+03:00", dt.date(2024, 5, 2)),
        ("2024-05-02T10:30:00Z", dt.date(2024, 5, 2)),
        ("2024-05-02 10:30:00 +0300", dt.date(2024, 5, 2)),
        ("2024-05-02 (перенесено на 2025-01-10)", None),  # was read as 2024-05-02 without a word
        ("2024-05-02 xx", None),
        ("2024-05-02T", None),
        ("2024-05-02T10", None),
    ],
)
def test_parse_date(text: str, expected: dt.date | None) -> None:
    assert parse_date(text) == expected


def test_one_text_value_and_a_column_of_them_agree() -> None:
    texts = ["  Demo ", "ÄBC\u00a0", "\tx\n", "", "İstanbul", "ß", "C-001 ", "\u2003wide\u2003"]
    for kind in (schema.Kind.ID, schema.Kind.CODE, schema.Kind.OUTCOME, schema.Kind.TIMESTAMP):
        column = text_values(kind, pd.Series(texts, dtype="str"))
        assert list(column) == [text_value(kind, t) for t in texts], kind


def table_check(row: dict[str, str], table: schema.Table, dicts: object) -> tuple[str, object]:
    frame = pd.DataFrame({name: pd.array([value], dtype="str") for name, value in row.items()})
    frame.attrs = {"source": "feedback"}
    errors: list[str] = []
    try:
        clean = schema.check_table(frame, table, dicts, schema.ValidationReport(), errors)
        schema.raise_if(errors)
    except DataError as exc:
        return "refused", str(exc)
    return "ok", clean.iloc[0]


def test_a_row_alone_gets_what_it_gets_in_a_table(tiny_dictionaries: object) -> None:
    for date, stage, outcome, manager in itertools.product(DATES, STAGES, OUTCOMES, ["", " m-1 "]):
        row = {"feedback_id": "f1", "contact_id": " c1 ", "occurred_on": date, "stage": stage,
               "characteristic": "CH_price", "outcome": outcome, "manager_id": manager}
        verdict, detail = table_check(row, schema.FEEDBACK, tiny_dictionaries)
        clean, errors = check_row(row, schema.FEEDBACK, "feedback")
        try:
            schema.raise_if(errors)
            mine: tuple[str, object] = ("ok", clean)
        except DataError as exc:
            mine = ("refused", str(exc))
        assert mine[0] == verdict, (row, mine, detail)
        if verdict == "refused":
            assert mine[1] == detail
            continue
        assert isinstance(detail, pd.Series) and isinstance(clean, dict)
        for name in ("feedback_id", "contact_id", "stage", "characteristic", "outcome", "manager_id"):
            assert clean[name] == detail[name], (row, name)
        assert clean["occurred_on"] == detail["occurred_on"].date()


def test_a_row_without_a_required_column_is_refused_like_a_table(tiny_dictionaries: object) -> None:
    row = {"contact_id": "c1", "occurred_on": "2024-05-02", "stage": "demo", "outcome": "positive"}
    verdict, detail = table_check(row, schema.OUTCOMES, tiny_dictionaries)
    with pytest.raises(DataError) as raised:
        check_row(row, schema.OUTCOMES, "feedback")
    assert verdict == "refused" and str(raised.value) == detail and "characteristic" in detail


def test_feedback_rules_refuse_beyond_the_row_rules(tiny_dictionaries: object) -> None:
    rules = schema.FeedbackRules(tiny_dictionaries)
    good = {"feedback_id": "f1", "contact_id": "c1", "occurred_on": "2024-05-02", "stage": "demo",
            "characteristic": "ch_price", "outcome": "positive"}
    assert rules.check(good)["occurred_on"] == dt.date(2024, 5, 2)
    cases = {
        "stage": ("nope", "feedback column 'stage': unknown stage 'nope'; allowed: lead, demo, deal"),
        "characteristic": ("ch_integration", "feedback column 'characteristic': 'ch_integration' at 'demo': not "
                           "offered at that stage"),
        "occurred_on": ("2024-05-03", "feedback column 'occurred_on': 1 invalid value(s) '2024-05-03' (row 1); "
                        "allowed: a date up to today (2024-05-02), not in the future"),
    }
    for column, (value, message) in cases.items():
        with pytest.raises(DataError) as raised:
            rules.check({**good, column: value}, today=dt.date(2024, 5, 2))
        assert str(raised.value).startswith(message), str(raised.value)
    with pytest.raises(DataError, match=r"unknown stage 'nope'.*and 1 more problem.*unknown characteristic 'ch_zz'"):
        rules.check({**good, "stage": "nope", "characteristic": "ch_zz"})


def test_ascii_int_reads_ascii_digits_only():
    assert schema.ascii_int("07") == 7 and schema.ascii_int("-3", signed=True) == -3
    for text in ("", "-3", "+5", " 5", "1_000", "\u0663", "\uff15", "\u00b3", "3.0", "--5"):
        assert schema.ascii_int(text) is None, text
    assert schema.ascii_int("--5", signed=True) is None and schema.ascii_int("-", signed=True) is None
