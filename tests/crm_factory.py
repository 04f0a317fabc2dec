"""Tiny CRM exports and dictionaries for tests (shared by every test module).

Usage (tests/conftest.py puts this directory on sys.path):

    from crm_factory import write_crm, write_dictionaries

    dicts_dir = write_dictionaries(tmp_path / "dicts")          # a minimal valid dictionary set
    data_dir = write_crm(tmp_path / "crm", dictionaries)        # a clean CRM: 6 orgs, 12 contacts, 60 outcome rows
    data_dir = write_crm(tmp_path / "crm", dictionaries, fmt="parquet", bad_date=True)   # one error injected

The clean CRM validates with no warnings (`client_since` and multi fields are sometimes empty, which
the contract treats as meaningful, not missing). Every knob of `write_crm` injects exactly one
contract problem; `edits` sets any cell. Row numbers are 1-based data rows (header not counted),
as in validation messages. The frames are also available unwritten via `crm_frames`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

N_ORGS = 6
N_CONTACTS = 12
N_OUTCOME_ROWS = 60
N_DATES = 12
FIRST_DATE = "2024-01-01"  # outcome dates: FIRST_DATE + 7·k days, k < N_DATES
UNKNOWN = "zz_unknown"  # a code that is in no dictionary
PERSONAL = {
    "organizations": {"name": "ООО Ромашка", "inn": "7701234567"},
    "contacts": {"full_name": "Иван Петров", "Email": "ivan@example.ru", "phone": "+7 900 000-00-00"},
}

TINY_DICTIONARIES: dict[str, Any] = {
    "industries": {
        "items": [
            {"code": "it", "name": "ИТ"},
            {"code": "retail", "name": "Розница"},
            {"code": "manufacturing", "name": "Производство"},
        ]
    },
    "regions": {"items": [{"code": "msk", "name": "Москва"}, {"code": "spb", "name": "Санкт-Петербург"}]},
    "positions": {
        "items": [
            {"code": "ceo", "name": "Директор"},
            {"code": "cto", "name": "Техдиректор"},
            {"code": "buyer", "name": "Закупщик"},
        ]
    },
    "departments": {"items": [{"code": "it", "name": "ИТ"}, {"code": "finance", "name": "Финансы"}]},
    "decision_roles": {"items": [{"code": "decider", "name": "ЛПР"}, {"code": "influencer", "name": "Влияет"}]},
    "legal_forms": {"items": [{"code": "ooo", "name": "ООО"}, {"code": "ao", "name": "АО"}]},
    "products": {"items": [{"code": "crm", "name": "CRM"}, {"code": "erp", "name": "ERP"}]},
    "funnel_stages": {
        "items": [{"code": "lead", "name": "Лид"}, {"code": "demo", "name": "Демо"}, {"code": "deal", "name": "Сделка"}]
    },
    "needs": {
        "categories": [
            {
                "code": "cost",
                "name": "Затраты",
                "needs": [{"code": "save_money", "name": "Экономия"}, {"code": "speed", "name": "Скорость"}],
            },
            {"code": "growth", "name": "Рост", "needs": [{"code": "scale", "name": "Масштаб"}]},
        ]
    },
    "characteristics": {
        "items": [
            {
                "code": "ch_price",
                "name": "Цена",
                "product": "crm",
                "needs": ["save_money"],
                "talking_points": {"default": "Дешевле аналогов."},
            },
            {
                "code": "ch_cloud",
                "name": "Облако",
                "product": "crm",
                "needs": ["speed"],
                "talking_points": {"demo": "Покажите облако.", "default": "Работает в облаке."},
            },
            {
                "code": "ch_integration",
                "name": "Интеграции",
                "product": "erp",
                "needs": ["scale"],
                "talking_points": {"lead": "Интегрируется со всем."},
            },
            {
                "code": "ch_support",
                "name": "Поддержка",
                "product": "erp",
                "needs": ["speed", "scale"],
                "talking_points": {"default": "Поддержка 24/7."},
            },
        ]
    },
}


def write_dictionaries(directory: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write the tiny dictionary set (optionally with whole files replaced by `overrides`) as YAML."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in {**TINY_DICTIONARIES, **(overrides or {})}.items():
        (directory / f"{name}.yaml").write_text(
            yaml.safe_dump(content, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
    return directory


def crm_frames(dictionaries: Any, *, seed: int = 0, personal_data: bool = True) -> dict[str, pd.DataFrame]:
    """A clean CRM as all-text DataFrames (what a CSV holds), codes drawn from `dictionaries`."""
    rng = np.random.default_rng(seed)
    codes = dictionaries.codes
    org_ids = [f"o{i + 1}" for i in range(N_ORGS)]
    industries = codes("industries")
    orgs = pd.DataFrame(
        {
            "org_id": org_ids,
            "industry": [industries[i % len(industries)] for i in range(N_ORGS)],
            "region": [codes("regions")[i % len(codes("regions"))] for i in range(N_ORGS)],
            "employees": [str(10 * (i + 1)) for i in range(N_ORGS)],
            "revenue_mln": [f"{1.5 * (i + 1):g}" for i in range(N_ORGS)],
            "legal_form": [codes("legal_forms")[i % len(codes("legal_forms"))] for i in range(N_ORGS)],
            "founded_year": [str(1995 + i) for i in range(N_ORGS)],
            "client_since": ["2020-05-01" if i % 2 == 0 else "" for i in range(N_ORGS)],  # "" = prospect
            "products_owned": [";".join(codes("products")[: i % 3]) for i in range(N_ORGS)],
        }
    )
    orgs.loc[1, "industry"] = f" {orgs.loc[1, 'industry'].upper()} "  # codes are compared stripped, lower-cased
    need_codes = [n.code for n in dictionaries.needs]
    contacts = pd.DataFrame(
        {
            "contact_id": [f"c{i + 1}" for i in range(N_CONTACTS)],
            "org_id": [org_ids[i % N_ORGS] for i in range(N_CONTACTS)],
            "position": [codes("positions")[i % len(codes("positions"))] for i in range(N_CONTACTS)],
            "department": [codes("departments")[i % len(codes("departments"))] for i in range(N_CONTACTS)],
            "decision_role": [codes("decision_roles")[i % len(codes("decision_roles"))] for i in range(N_CONTACTS)],
            "interests": [
                ";".join(need_codes[j] for j in range(len(need_codes)) if (i >> j) & 1) for i in range(N_CONTACTS)
            ],
        }
    )
    dates = pd.date_range(FIRST_DATE, periods=N_DATES, freq="7D").strftime("%Y-%m-%d")
    n = N_OUTCOME_ROWS
    outcomes = pd.DataFrame(
        {
            "contact_id": [f"c{i + 1}" for i in rng.integers(0, N_CONTACTS, n)],
            "occurred_on": np.asarray(dates)[np.sort(rng.integers(0, N_DATES, n))],
            "stage": [codes("funnel_stages")[i] for i in rng.integers(0, len(codes("funnel_stages")), n)],
            "characteristic": [codes("characteristics")[i] for i in rng.integers(0, len(codes("characteristics")), n)],
            "outcome": np.where(rng.random(n) < 0.4, "positive", "negative"),
        }
    )
    outcomes.loc[0, "outcome"] = "positive"
    characteristics, seen = codes("characteristics"), set()
    for i in range(n):  # clean: no event twice (a repeated cell is validation's duplicate_events warning)
        row = outcomes.iloc[i]
        shift = 0
        while (row["contact_id"], row["occurred_on"], row["stage"], characteristics[
                (characteristics.index(row["characteristic"]) + shift) % len(characteristics)]) in seen:
            shift += 1
        code = characteristics[(characteristics.index(row["characteristic"]) + shift) % len(characteristics)]
        outcomes.loc[i, "characteristic"] = code
        seen.add((row["contact_id"], row["occurred_on"], row["stage"], code))
    frames = {"organizations": orgs, "contacts": contacts, "outcomes": outcomes}
    if personal_data:
        for table, columns in PERSONAL.items():
            for column, value in columns.items():
                frames[table][column] = [f"{value} {i}" for i in range(len(frames[table]))]
    frames["contacts"]["notes"] = "an extra column, ignored"
    return {name: df.astype(str) for name, df in frames.items()}


def write_crm(
    directory: str | Path,
    dictionaries: Any,
    *,
    fmt: str = "csv",
    seed: int = 0,
    personal_data: bool = True,
    parquet_lists: bool = True,
    missing_file: str | None = None,
    both_formats: str | None = None,
    drop_column: tuple[str, str] | None = None,
    empty_table: str | None = None,
    empty_required: tuple[str, str] | None = None,
    duplicate_id: str | None = None,
    orphan_contact: bool = False,
    bad_date: bool = False,
    bad_number: bool = False,
    negative_count: bool = False,
    bad_outcome: bool = False,
    unknown_code: bool = False,
    missing_optional: bool = False,
    unknown_contact_rows: int = 0,
    unknown_characteristic_rows: int = 0,
    unknown_stage_rows: int = 0,
    no_positive: bool = False,
    edits: Iterable[tuple[str, int, str, str]] = (),
) -> Path:
    """Write a tiny CRM into `directory` as CSV or Parquet (`fmt`), with problems injected on request.

    Errors (contract §2): missing_file=<table>; both_formats=<table> (a .csv and a .parquet);
    drop_column=(table, column); empty_table=<table> (header only); empty_required=(table, column)
    (row 2 blank); duplicate_id='organizations'|'contacts' (row 3 repeats row 1's id);
    orphan_contact (contact row 2 → org 'o404'); bad_date (outcomes row 3 occurred_on '2024-13-45');
    bad_number (organizations row 2 employees 'many'); negative_count (organizations row 2
    revenue_mln '-5'); bad_outcome (outcomes row 4 'maybe'); no_positive (every outcome negative).
    Warnings: unknown_code (contacts row 1 position and row 2 interests get UNKNOWN);
    missing_optional (organizations row 1 region and row 2 employees, contacts row 3 department
    blank); unknown_contact_rows / unknown_characteristic_rows / unknown_stage_rows = k (the last k
    outcome rows point at an unknown contact 'c404' / characteristic / stage: dropped; more than 3
    of the 60 rows, i.e. over 5%, is an error). `edits`: (table, row, column, value) cells to set.
    Personal-data columns (PERSONAL) and an extra 'notes' column are included unless personal_data=False.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frames = crm_frames(dictionaries, seed=seed, personal_data=personal_data)
    contacts, outcomes = frames["contacts"], frames["outcomes"]

    def set_cell(table: str, row: int, column: str, value: str) -> None:
        frames[table].loc[row - 1, column] = value

    if empty_required:
        set_cell(empty_required[0], 2, empty_required[1], "")
    if duplicate_id:
        key = "org_id" if duplicate_id == "organizations" else "contact_id"
        set_cell(duplicate_id, 3, key, frames[duplicate_id].loc[0, key])
    if orphan_contact:
        set_cell("contacts", 2, "org_id", "o404")
    if bad_date:
        set_cell("outcomes", 3, "occurred_on", "2024-13-45")
    if bad_number:
        set_cell("organizations", 2, "employees", "many")
    if negative_count:
        set_cell("organizations", 2, "revenue_mln", "-5")
    if bad_outcome:
        set_cell("outcomes", 4, "outcome", "maybe")
    if unknown_code:
        set_cell("contacts", 1, "position", UNKNOWN)
        set_cell("contacts", 2, "interests", f"{contacts.loc[1, 'interests']};{UNKNOWN}")
    if missing_optional:
        set_cell("organizations", 1, "region", "")
        set_cell("organizations", 2, "employees", "")
        set_cell("contacts", 3, "department", "")
    for column, k, value in (
        ("contact_id", unknown_contact_rows, "c404"),
        ("characteristic", unknown_characteristic_rows, UNKNOWN),
        ("stage", unknown_stage_rows, UNKNOWN),
    ):
        if k:
            outcomes.loc[len(outcomes) - k :, column] = value
    if no_positive:
        outcomes["outcome"] = "negative"
    for table, row, column, value in edits:
        set_cell(table, row, column, value)
    if drop_column:
        frames[drop_column[0]] = frames[drop_column[0]].drop(columns=[drop_column[1]])
    if empty_table:
        frames[empty_table] = frames[empty_table].iloc[:0]

    for name, df in frames.items():
        if name == missing_file:
            continue
        formats = {"csv", "parquet"} if name == both_formats else {fmt}
        for f in formats:
            write_frame(df, directory / f"{name}.{f}", parquet_lists=parquet_lists)
    return directory


def write_frame(df: pd.DataFrame, path: Path, *, parquet_lists: bool = True) -> Path:
    """Write an all-text frame as CSV (UTF-8), or as Parquet with typed columns where they parse:
    numbers as float64 (nulls for blanks), dates as date32, multi fields as list<string>."""
    if path.suffix == ".csv":
        df.to_csv(path, index=False, encoding="utf-8")
        return path
    arrays = {}
    for column in df.columns:
        arrays[column] = _typed(column, df[column], parquet_lists)
    pq.write_table(pa.table(arrays) if arrays else pa.table({}), path)
    return path


NUMBER_COLUMNS = {"employees", "revenue_mln", "founded_year"}
DATE_COLUMNS = {"client_since", "occurred_on"}
MULTI_COLUMNS = {"products_owned", "interests"}


def _typed(column: str, values: pd.Series, parquet_lists: bool) -> pa.Array:
    text = values.astype(str)
    blank = text.str.strip() == ""
    try:
        if column in NUMBER_COLUMNS:
            numbers = pd.to_numeric(text.where(~blank), errors="raise")
            return pa.array(numbers.to_numpy(dtype="float64"), pa.float64(), mask=blank.to_numpy())
        if column in DATE_COLUMNS:
            dates = pd.to_datetime(text.where(~blank), format="%Y-%m-%d", errors="raise")
            return pa.array([None if b else d.date() for d, b in zip(dates, blank, strict=True)], pa.date32())
    except (ValueError, TypeError):
        pass  # an injected bad value: keep the column as text
    if column in MULTI_COLUMNS and parquet_lists:
        return pa.array([[p for p in v.split(";") if p] for v in text], pa.list_(pa.string()))
    return pa.array(text.tolist(), pa.string())


def write_crm_database(url: str, dictionaries: Any, **knobs: Any) -> str:
    """The same tiny CRM as `write_crm(…, **knobs)` (problems injected alike), as tables of the
    database at `url` (an empty SQLite file or PostgreSQL schema, e.g. the `database_url` fixture).
    Every value is text, as in the CSV export."""
    import tempfile

    from crm.write import write_tables

    with tempfile.TemporaryDirectory() as tmp:
        directory = write_crm(Path(tmp), dictionaries, fmt="csv", **knobs)
        frames = {
            path.stem: pd.read_csv(path, dtype=str, keep_default_na=False) for path in sorted(directory.glob("*.csv"))
        }
    write_tables(url, frames)
    return url
