"""`serving.requests`: the parts of parsing a request that are not about one field's rules."""

from __future__ import annotations

import datetime as dt

import pytest

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
