"""One CRM row → the JSON values a full-fields recommendation request carries (contract §4).

A contact looked up by id must answer exactly what the same contact sent field by field answers,
so lookups do not validate values themselves: they only turn the CRM's values (text from a file,
typed values from a database) into JSON types — numbers, ISO dates, codes, lists of codes, None
for empty — and the service's request parser then checks them as it checks any request. Only a
value that cannot be a JSON value of its kind at all (a number column holding "abc") is refused
here, as a CrmRowError (a DataError) naming the table, column and row key.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from crm.source import ContactRecord
from needs_rec import schema
from needs_rec.errors import CrmRowError, clipped

_FIELDS = {
    table.name: tuple(c for c in table.columns if c.kind is not schema.Kind.ID)
    for table in (schema.ORGANIZATIONS, schema.CONTACTS)
}


def record_of(contact: Mapping[str, Any], organization: Mapping[str, Any] | None) -> ContactRecord:
    """A ContactRecord from a contacts row and its organizations row (None when the org is missing)."""
    contact_id = _id(contact.get("contact_id"))
    return ContactRecord(
        contact_id=contact_id,
        org_id=_id(contact.get("org_id")),
        organization=None if organization is None else fields_of(organization, "organizations", contact_id),
        contact=fields_of(contact, "contacts", contact_id),
    )


def fields_of(row: Mapping[str, Any], table: str, contact_id: str) -> dict[str, Any]:
    """The §2 fields (identifiers aside) of one row as JSON values; absent columns are left out."""
    out: dict[str, Any] = {}
    for column in _FIELDS[table]:
        if column.name in row:
            out[column.name] = _value(row[column.name], column, table, contact_id)
    return out


def _id(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _empty(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and not value.strip())


def _value(value: Any, column: schema.Column, table: str, contact_id: str) -> Any:
    if _empty(value):
        return [] if column.kind is schema.Kind.MULTI else None
    kind = column.kind
    if kind in (schema.Kind.NUMBER, schema.Kind.YEAR):
        if isinstance(value, bool):
            raise _bad(value, column, table, contact_id, "a number")
        if isinstance(value, int | float | Decimal):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise _bad(value, column, table, contact_id, "a number") from None
    if kind is schema.Kind.DATE:
        if isinstance(value, dt.date | dt.datetime):
            return value.isoformat()[:10]
        day = schema.parse_date(str(value).strip())  # the rule validation applies to the same column
        if day is None:
            raise _bad(value, column, table, contact_id, "an ISO date YYYY-MM-DD")
        return day.isoformat()
    if kind is schema.Kind.MULTI:
        parts = value if isinstance(value, list | tuple) else str(value).split(schema.MULTI_SEPARATOR)
        return [str(p).strip() for p in parts if p is not None and str(p).strip()]
    return str(value).strip()


def _bad(value: Any, column: schema.Column, table: str, contact_id: str, allowed: str) -> CrmRowError:
    shown = repr(value if len(repr(value)) <= 40 else clipped(str(value)))
    return CrmRowError(
        f"CRM {table} column {column.name!r} for contact {contact_id!r}: {shown} is not {allowed}",
        "fix the CRM row or send the contact's fields in the request",
    )
