"""`serving.requests`: the parts of parsing a request that are not about one field's rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from needs_rec import dictionaries, schema
from needs_rec.errors import RequestError
from serving import requests


def test_a_request_without_a_date_is_dated_today_in_utc_across_midnight(monkeypatch: pytest.MonkeyPatch) -> None:
    assert requests._today() == dt.datetime.now(dt.UTC).date().isoformat()
    midnight = dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    for at, expected in ((midnight - 0.5, "2026-12-31"), (midnight, "2027-01-01"), (midnight + 86399.5, "2027-01-01"),
                         (midnight + 86400, "2027-01-02"), (midnight - 1, "2026-12-31")):  # fmt: skip
        monkeypatch.setattr(requests.time, "time", lambda at=at: at)
        assert requests._today() == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "got null"), ([None], "got array [null]"), ({"stage": "lead"}, 'got object {"stage":"lead"}'),
     (True, "got boolean true"), (3, "got number 3"), ("lead", "got string 'lead'")],
)
def test_a_wrong_type_is_shown_as_the_caller_wrote_it(value: object, shown: str) -> None:
    message = str(requests._wrong_type("organization", "an object", value))
    assert message == f"field 'organization' must be an object, {shown}"  # JSON, never Python's None / {'a': …}


@pytest.fixture(scope="module")
def parser() -> requests.RequestParser:
    return requests.RequestParser(dictionaries.load(Path(__file__).resolve().parents[2] / "dictionaries"))


@pytest.mark.parametrize(
    ("change", "field"),
    [({"organization": {"industry": "it", "employees": -5}}, "items.2.organization.employees"),
     ({"organization": {"industry": "it", "founded_year": "old"}}, "items.2.organization.founded_year"),
     ({"organization": {}}, "items.2.organization.industry"),
     ({"contact": {"position": 7}}, "items.2.contact.position"),
     ({"organization": {"industry": "it", "client_since": "2026-13-01"}}, "items.2.organization.client_since"),
     ({"contact": {"position": "ceo", "interests": [1]}}, "items.2.contact.interests"),
     ({"top_k": 0}, "items.2.top_k"),
     ({"request_id": "a\x00b"}, "items.2.request_id"),
     ({"contact": None}, "items.2.contact")],
)
def test_a_field_error_names_its_field_apart_from_the_message(
    parser: requests.RequestParser, change: dict[str, object], field: str
) -> None:
    body = {"stage": "first_contact", "organization": {"industry": "it"}, "contact": {"position": "ceo"}, **change}
    with pytest.raises(RequestError) as caught:
        parser.recommendation(body, "items.2.")
    assert caught.value.field == field  # the lookup path tells a CRM row's value from the caller's by this
    assert str(caught.value).startswith(f"field '{field}'")


def test_an_error_of_the_whole_body_names_no_field_inside_it(parser: requests.RequestParser) -> None:
    with pytest.raises(RequestError) as caught:
        parser.recommendation(None)
    assert caught.value.field == "body"
    with pytest.raises(RequestError) as caught:
        requests.parse_json(b'{"stage": ')
    assert caught.value.field is None and str(caught.value).startswith("body: malformed JSON")
    with pytest.raises(RequestError, match=r"^body: not UTF-8 text \(bad byte at offset 14\)"):
        requests.parse_json(b'{"instances":[\xff]}')  # orjson's own words: "surrogates not allowed"


def test_an_implausible_year_in_a_request_is_missing_with_a_warning(parser: requests.RequestParser) -> None:
    body = {"stage": "first_contact", "organization": {"industry": "it", "founded_year": 99999},
            "contact": {"position": "ceo"}}
    parsed = parser.recommendation(body)
    year = parsed.row[list(schema.MODEL_INPUT_NAMES).index("founded_year")]
    assert year != year  # NaN: missing, as validation treats the same value in the CRM
    assert "field 'organization.founded_year': year 99999 is outside 1700–" in " ".join(parsed.warnings)
    body["organization"]["founded_year"] = 2004
    assert not [w for w in parser.recommendation(body).warnings if "founded_year" in w]


def test_a_client_since_after_today_in_a_request_is_missing_with_a_warning(parser: requests.RequestParser) -> None:
    """As validation treats the CRM's (a client of many years made one of none by 2099 for 2019)."""
    body = {"stage": "first_contact", "organization": {"industry": "it", "client_since": "2099-01-01"},
            "contact": {"position": "ceo"}}
    parsed = parser.recommendation(body)
    assert parsed.row[list(schema.MODEL_INPUT_NAMES).index("client_since")] == ""
    assert "field 'organization.client_since': date 2099-01-01 is after today; treated as missing" in parsed.warnings
    body["organization"]["client_since"] = "2019-01-01"
    again = parser.recommendation(body)
    assert again.row[list(schema.MODEL_INPUT_NAMES).index("client_since")] == "2019-01-01"
    assert not [w for w in again.warnings if "client_since" in w]


def test_an_unknown_code_is_echoed_clipped(parser: requests.RequestParser) -> None:
    """A 100,000-character code from the CRM came back whole in the warning (a 101 KB answer)."""
    body = {"stage": "first_contact", "organization": {"industry": "x" * 100_000},
            "contact": {"position": "ceo", "interests": ["y" * 100_000]}}
    warnings = parser.recommendation(body).warnings
    assert len(warnings) == 2 and all(len(w) < 120 for w in warnings), [len(w) for w in warnings]
    assert warnings[0].startswith("unknown industry code 'xxxx")
