"""crm.records: one contact's CRM rows as the request fields, by the rules validation applies to the same columns."""

from __future__ import annotations

import pandas as pd
import pytest

from crm.records import record_of
from needs_rec import schema
from needs_rec.errors import DataError

CONTACT = {"contact_id": " c1 ", "org_id": "o1", "position": "ceo", "interests": "tax; hr ;", "full_name": "Иван"}


def organization(client_since: object) -> dict[str, object]:
    return {"org_id": "o1", "industry": "it", "employees": "120", "client_since": client_since}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("2024-03-05", "2024-03-05"), ("2024-3-5", "2024-03-05"), (" 2024-03-05T10:30:00 ", "2024-03-05"),
     (pd.Timestamp("2024-03-05 10:30"), "2024-03-05"), ("", None)],
)
def test_a_date_the_validation_accepts_is_looked_up_as_its_iso_day(stored: object, expected: str | None) -> None:
    record = record_of(CONTACT, organization(stored))
    assert record.contact_id == "c1" and record.organization["client_since"] == expected
    assert record.organization["employees"] == 120.0 and record.contact["interests"] == ["tax", "hr"]
    assert "full_name" not in record.contact  # personal fields are never request fields


@pytest.mark.parametrize("stored", ["2024-13-45", "2023-02-29", "05.03.2024", "2024-03-05junk"])
def test_a_date_the_validation_refuses_names_the_column_and_contact(stored: str) -> None:
    with pytest.raises(DataError) as caught:
        record_of(CONTACT, organization(stored))
    message = str(caught.value)
    assert "organizations column 'client_since' for contact 'c1'" in message and repr(stored) in message
    assert schema.parse_date(stored) is None
