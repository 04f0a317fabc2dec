"""Request validation: a JSON body → one row of raw model inputs, plus warnings for unknown codes.

The field kinds come from `needs_rec.schema` (contract §2) and the codes from the served version's
own dictionaries, so nothing here is hard-wired to one firm. A wrong type, a missing required field
or an unknown stage raises `RequestError` naming the field (the service answers 400); an unknown
code is kept — the model encodes it as unknown — and reported as a warning. A field the contract
does not know (a misspelled `intrests`) is ignored and named in `warnings` (contract §4 v2), with a
close match when there is one; personal fields (`schema.PERSONAL_COLUMNS`: `full_name`, `email`, …)
are ignored silently, and no field's value is ever copied into an answer or a log.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from needs_rec import schema
from needs_rec.dictionaries import Dictionaries, normalize_code
from needs_rec.errors import RequestError, clipped
from needs_rec.schema.rows import NOT_IN_FUTURE, latest_event_date, plausible_year

ORGANIZATION_FIELDS: tuple[schema.Column, ...] = tuple(
    c for c in schema.ORGANIZATIONS.columns if c.kind is not schema.Kind.ID
)
CONTACT_FIELDS: tuple[schema.Column, ...] = tuple(c for c in schema.CONTACTS.columns if c.kind is not schema.Kind.ID)
_MULTI_POSITIONS = tuple(
    i for i, c in enumerate(schema.MODEL_INPUTS) if c.kind is schema.Kind.MULTI
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
FLOAT32_MAX = 3.4028234663852886e38  # larger numbers would become infinity inside the model

#: Fields each part of a request may carry; anything else is named in `warnings` (personal fields
#: excepted). Routers that accept more fields (e.g. `contact_id`) extend these sets.
#: Longest id a request may carry (request_id here; feedback_id, request_id, manager_id, contact_id in feedback).
MAX_ID = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RECOMMENDATION_FIELDS = {schema.STAGE, "organization", "contact", "top_k", "request_id", schema.OCCURRED_ON,
                         "contact_id"}
ORGANIZATION_KEYS = frozenset(c.name for c in schema.ORGANIZATIONS.columns)
CONTACT_KEYS = frozenset(c.name for c in schema.CONTACTS.columns)
INSTANCE_FIELDS = {*ORGANIZATION_KEYS, *CONTACT_KEYS, schema.STAGE, schema.OCCURRED_ON}
#: TensorFlow Serving's predict body: row form (`instances`) or columnar form (`inputs`).
PREDICT_FIELDS = frozenset({"instances", "inputs", "signature_name"})


def parse_json(body: bytes) -> Any:
    """Decode a request body, or RequestError saying where the JSON breaks."""
    if not body.strip():
        raise RequestError("body: empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:  # orjson says "surrogates not allowed" for any bad byte
            raise RequestError(f"body: not UTF-8 text (bad byte at offset {bad.start}); send JSON as UTF-8") from exc
        raise RequestError(f"body: malformed JSON ({exc})") from exc


class _Pairs(list):
    """A JSON object as its (key, value) pairs in order, repeats kept (`json.loads` object_pairs_hook)."""


def parse_json_fields_once(body: bytes) -> Any:
    """`parse_json`, and RequestError when the top-level object gives a field more than once.

    JSON parsers keep the last of repeated keys without a word, so `{"outcome": "positive", ...,
    "outcome": "negative"}` would be stored as negative though the caller may mean either. orjson
    cannot report repeats, so this parses the body a second time with the standard library: a
    cost the feedback endpoint (a small body, a manager's click) can pay and the recommendation
    hot path does not. Only the top level is checked: nested objects are never stored.
    """
    parsed = parse_json(body)
    if not isinstance(parsed, dict):
        return parsed
    try:
        pairs = json.loads(body, object_pairs_hook=_Pairs)
    except RecursionError:  # orjson takes 1024 levels; the standard library may stop sooner
        raise RequestError("body: nested too deeply; a field's value must be a string") from None
    seen: dict[str, int] = {}
    for key, _ in pairs:
        seen[key] = seen.get(key, 0) + 1
    for key, count in seen.items():
        if count > 1:
            times = "twice" if count == 2 else f"{count} times"
            raise RequestError(f"body: field {clipped(key)!r} given {times}; send each field once (which one was "
                               "meant cannot be told)")
    return parsed


def _shown(value: Any) -> str:
    """The value as the caller wrote it: a string quoted, anything else in JSON (null, true, [1, 2], {"a": 1})."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # not JSON (a caller of the parser outside HTTP)
            text = repr(value)
    return clipped(text, 60)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    ) if value is not None else "null"


def _wrong_type(where: str, expected: str, value: Any) -> RequestError:
    got = "null" if value is None else f"{_type_name(value)} {_shown(value)}"
    return RequestError(f"field '{where}' must be {expected}, got {got}", field=where)


def unknown_fields(
    source: Mapping[str, Any], known: frozenset[str] | set[str], prefix: str, warnings: list[str]
) -> None:
    """Name in `warnings` each key of `source` that is not in `known` (personal fields ignored without a word)."""
    extra = source.keys() - known
    if not extra:
        return
    for key in sorted(extra, key=str):
        if schema.is_personal(key):
            continue
        shown = clipped(key)
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        warnings.append(f"unknown field '{prefix}{shown}' ignored{hint}")


def check_id(name: str, value: str) -> None:
    """An id a caller sends (request_id, feedback_id, contact_id, …): at most MAX_ID characters and no
    control characters — PostgreSQL text cannot hold U+0000, so such an id would be stored on one
    database and be a permanent 503 on the other; an id is never meant to hold one anyway."""
    if len(value) > MAX_ID:
        raise RequestError(f"field '{name}' is longer than {MAX_ID} characters", field=name)
    found = _CONTROL.search(value)
    if found is not None:
        raise RequestError(f"field '{name}' must not contain control characters; found U+{ord(found.group()):04X} "
                           f"at position {found.start()}", field=name)


@dataclass
class ParsedRequest:
    """One validated request: the model-input row and what rendering needs."""

    row: list[Any]  # values in `schema.MODEL_INPUT_NAMES` order
    stage: str
    position: str
    industry: str
    interests: tuple[str, ...]
    products_owned: tuple[str, ...]
    top_k: int | None = None
    request_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)


class RequestParser:
    """Validates request bodies against one model version's dictionaries (built once per version)."""

    def __init__(self, dictionaries: Dictionaries):
        self.stages = dictionaries.stage_codes
        self._stage_set = frozenset(self.stages)
        self._codes: dict[str, frozenset[str]] = {
            c.name: frozenset(dictionaries.codes(c.vocabulary))
            for c in (*ORGANIZATION_FIELDS, *CONTACT_FIELDS)
            if c.vocabulary is not None
        }

    # -- public forms ------------------------------------------------------------------------

    def recommendation(self, body: Any, where: str = "") -> ParsedRequest:
        """`POST /v1/recommendations` form: {stage, organization: {...}, contact: {...}, top_k?, occurred_on?}."""
        if not isinstance(body, dict):
            raise _wrong_type(where.rstrip(".") or "body", "a JSON object", body)
        values: dict[str, Any] = {}
        warnings: list[str] = []
        unknown: list[str] = []
        stage = self._stage(body, where)
        organization = self._object(body, "organization", where)
        contact = self._object(body, "contact", where)
        self._fields(organization, ORGANIZATION_FIELDS, f"{where}organization.", values, warnings, unknown)
        self._fields(contact, CONTACT_FIELDS, f"{where}contact.", values, warnings, unknown)
        unknown_fields(body, RECOMMENDATION_FIELDS, "", warnings)  # warnings belong to their item: no `where`
        unknown_fields(organization, ORGANIZATION_KEYS, "organization.", warnings)
        unknown_fields(contact, CONTACT_KEYS, "contact.", warnings)
        parsed = self._finish(body, where, stage, values, warnings, unknown)
        parsed.top_k = self._top_k(body.get("top_k"), f"{where}top_k")
        request_id = body.get("request_id")
        if request_id is not None:
            if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
                raise _wrong_type(f"{where}request_id", "a string", request_id)
            parsed.request_id = str(request_id)
            check_id(f"{where}request_id", parsed.request_id)  # feedback must be able to name it
        return parsed

    def instance(self, body: Any, where: str) -> ParsedRequest:
        """TensorFlow Serving instance form: the organization and contact fields and `stage` side by side."""
        if not isinstance(body, dict):
            raise _wrong_type(where.rstrip("."), "a JSON object", body)
        values: dict[str, Any] = {}
        warnings: list[str] = []
        unknown: list[str] = []
        stage = self._stage(body, where)
        self._fields(body, ORGANIZATION_FIELDS, where, values, warnings, unknown)
        self._fields(body, CONTACT_FIELDS, where, values, warnings, unknown)
        unknown_fields(body, INSTANCE_FIELDS, "", warnings)
        return self._finish(body, where, stage, values, warnings, unknown)

    def predict_items(self, body: Any, limit: int) -> tuple[list[tuple[Any, str]], bool, list[str]]:
        """TensorFlow Serving predict body → ([(instance, where)], columnar?, warnings).

        Row form `{"instances": [{field: value, ...}, ...]}` or columnar form
        `{"inputs": {field: [value per row], ...}}` (every list the same length), as TF Serving's REST API.
        """
        if not isinstance(body, dict):
            raise _wrong_type("body", "a JSON object with 'instances' or 'inputs'", body)
        warnings: list[str] = []
        unknown_fields(body, PREDICT_FIELDS, "", warnings)
        if "inputs" not in body:
            items = self.batch(body, "instances", limit)
            return [(item, f"instances[{i}].") for i, item in enumerate(items)], False, warnings
        if "instances" in body:
            raise RequestError("body: give either 'instances' (row form) or 'inputs' (columnar form), not both")
        columns = body["inputs"]
        if isinstance(columns, dict):  # personal fields are ignored without a word (§4), as in the row form:
            columns = {name: values for name, values in columns.items() if not schema.is_personal(name)}
        if not isinstance(columns, dict) or not columns:
            raise _wrong_type("inputs", "an object mapping each input name to a list of values (columnar form)",
                              columns)
        sizes = set()
        for name, values in columns.items():
            if not isinstance(values, list):
                raise _wrong_type(f"inputs.{name}", "an array (one value per row)", values)
            sizes.add(len(values))
        if len(sizes) != 1:
            lengths = ", ".join(f"{name}: {len(v)}" for name, v in columns.items())
            raise RequestError(f"field 'inputs': every input needs the same number of rows, got {lengths}")
        rows = sizes.pop()
        if rows > limit:
            raise RequestError(f"field 'inputs' holds {rows} rows; at most {limit} are allowed per call")
        unknown_fields(columns, INSTANCE_FIELDS, "inputs.", warnings)  # once per column, not once per row
        columns = {name: values for name, values in columns.items() if name in INSTANCE_FIELDS}
        return [({name: values[i] for name, values in columns.items()}, f"inputs[{i}].") for i in range(rows)], \
            True, warnings

    @staticmethod
    def in_columns(error: RequestError, row: int) -> RequestError:
        """`error` of row `row` of a columnar body with its field named as the caller wrote it: the rows are
        parsed as `inputs[3].employees`, the caller sent `inputs.employees[3]` (a column left out:
        `inputs.position`)."""
        prefix = f"inputs[{row}]."
        field = error.field
        if not field or not field.startswith(prefix):
            return error
        name = field[len(prefix):]
        column = re.match(r"[^.\[]*", name).group()  # type: ignore[union-attr]  # always matches
        missing = str(error).startswith(f"field '{field}' is required")
        renamed = f"inputs.{column}" if missing else f"inputs.{column}[{row}]{name[len(column):]}"
        return RequestError(str(error).replace(f"'{field}'", f"'{renamed}'", 1), renamed)

    def batch(self, body: Any, key: str, limit: int, warnings: list[str] | None = None) -> list[Any]:
        """The list under `key` (`requests` or `instances`), checked for type and the batch-size limit;
        any other key of the body is named in `warnings` when given (contract §4 v2: never dropped silently)."""
        if not isinstance(body, dict):
            raise _wrong_type("body", f"a JSON object with {key!r}", body)
        if warnings is not None:
            unknown_fields(body, {key}, "", warnings)
        items = body.get(key)
        if items is None:
            raise RequestError(f"field '{key}' is required (a list of at most {limit} items)")
        if not isinstance(items, list):
            raise _wrong_type(key, "an array", items)
        if len(items) > limit:
            raise RequestError(f"field '{key}' holds {len(items)} items; at most {limit} are allowed per call")
        return items

    # -- pieces ------------------------------------------------------------------------------

    def _stage(self, body: Mapping[str, Any], where: str) -> str:
        value = body.get("stage")
        name = f"{where}stage"
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RequestError(f"field '{name}' is required (a funnel stage code: {', '.join(self.stages)})", name)
        if not isinstance(value, str):
            raise _wrong_type(name, "a string (a funnel stage code)", value)
        stage = normalize_code(value)
        if stage not in self._stage_set:
            raise RequestError(f"field '{name}': unknown stage {_shown(value)}; allowed: {', '.join(self.stages)}",
                               name)
        return stage

    @staticmethod
    def _object(body: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        value = body.get(key)
        if value is None:
            raise RequestError(f"field '{where}{key}' is required (an object with the {key}'s fields)",
                               field=f"{where}{key}")
        if not isinstance(value, dict):
            raise _wrong_type(f"{where}{key}", "an object", value)
        return value

    def _fields(
        self,
        source: Mapping[str, Any],
        columns: tuple[schema.Column, ...],
        prefix: str,
        values: dict[str, Any],
        warnings: list[str],
        unknown: list[str],
    ) -> None:
        for column in columns:
            name = column.name
            raw = source.get(name)
            where = prefix + name
            kind = column.kind
            if kind is schema.Kind.CODE:
                code = self._code(raw, where)
                if not code and column.required:
                    raise RequestError(f"field '{where}' is required (a code of {column.vocabulary}.yaml)", field=where)
                if code and code not in self._codes[name]:
                    warnings.append(f"unknown {name} code {clipped(code)!r} treated as unknown")
                    unknown.append(name)
                values[name] = code
            elif kind is schema.Kind.MULTI:
                codes = self._multi(raw, where)
                known = self._codes[name]
                for code in codes:
                    if code not in known:
                        warnings.append(f"unknown {name} code {clipped(code)!r} treated as unknown")
                        unknown.append(name)
                values[name] = codes
            elif kind is schema.Kind.NUMBER:
                values[name] = self._number(raw, where, non_negative=True)
            elif kind is schema.Kind.YEAR:
                year = self._number(raw, where, non_negative=False)
                if not math.isnan(year) and not plausible_year(year):  # as validation treats the CRM's
                    warnings.append(f"field '{where}': year {year:g} is outside {schema.YEAR_MIN}–"
                                    f"{schema.year_max()}; treated as missing")
                    year = math.nan
                values[name] = year
            elif kind is schema.Kind.DATE:
                text = self._date(raw, where)
                if text and name in NOT_IN_FUTURE and date.fromisoformat(text) > latest_event_date():
                    warnings.append(f"field '{where}': date {text} is after today; treated as missing")  # as the
                    text = ""  # CRM's (validation): 2099 for 2019 would make a client of years one of none
                values[name] = text

    def _finish(
        self,
        body: Mapping[str, Any],
        where: str,
        stage: str,
        values: dict[str, Any],
        warnings: list[str],
        unknown: list[str],
    ) -> ParsedRequest:
        occurred_on = self._date(body.get(schema.OCCURRED_ON), f"{where}{schema.OCCURRED_ON}") or _today()
        interests: tuple[str, ...] = values["interests"]
        owned: tuple[str, ...] = values["products_owned"]
        values[schema.STAGE] = stage
        values[schema.OCCURRED_ON] = occurred_on
        row = [values[name] for name in schema.MODEL_INPUT_NAMES]
        for i in _MULTI_POSITIONS:
            row[i] = schema.MULTI_SEPARATOR.join(row[i])
        return ParsedRequest(
            row=row,
            stage=stage,
            position=values["position"],
            industry=values["industry"],
            interests=interests,
            products_owned=owned,
            warnings=warnings,
            unknown_fields=unknown,
        )

    @staticmethod
    def _code(value: Any, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _wrong_type(where, "a string (a dictionary code)", value)
        return normalize_code(value)

    @staticmethod
    def _multi(value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            parts = value.split(schema.MULTI_SEPARATOR)
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, str):
                    raise _wrong_type(where, "an array of strings (dictionary codes)", value)
            parts = value
        else:
            raise _wrong_type(where, "an array of strings (dictionary codes)", value)
        codes = []
        for part in parts:
            code = normalize_code(part)
            if code and code not in codes:
                codes.append(code)
        return tuple(codes)

    @staticmethod
    def _number(value: Any, where: str, *, non_negative: bool) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_type(where, "a number", value)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:  # the model computes in float32
            raise _wrong_type(where, f"a finite number of magnitude at most {FLOAT32_MAX:.4g}", value)
        if non_negative and number < 0:
            raise RequestError(f"field '{where}' must be a number >= 0, got {_shown(value)}", field=where)
        return number

    @staticmethod
    def _date(value: Any, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _wrong_type(where, "an ISO date string (YYYY-MM-DD)", value)
        text = value.strip()
        if not text:
            return ""
        try:
            if not _ISO_DATE.fullmatch(text):
                raise ValueError(text)
            date.fromisoformat(text)
        except ValueError as exc:
            raise RequestError(f"field '{where}' must be an ISO date (YYYY-MM-DD), got {_shown(value)}",
                               field=where) from exc
        return text

    @staticmethod
    def _top_k(value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(where, "a positive integer", value)
        if value < 1:
            raise RequestError(f"field '{where}' must be a positive integer, got {value}", field=where)
        return value


def _today() -> str:
    """The episode date of a live request: today (UTC), as the model's `occurred_on`.

    Built once per UTC day (`time.time()` costs a fraction of `datetime.now(UTC).date().isoformat()`,
    which every request without `occurred_on` would pay).
    """
    return _iso_day(int(time.time() // 86400))


@functools.lru_cache(maxsize=1)
def _iso_day(day: int) -> str:
    """The ISO date of UTC day number `day` (days since 1970-01-01)."""
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()
