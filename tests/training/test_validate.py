"""`python -m training.validate`: one test per error and warning case of contract §2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from crm_factory import N_OUTCOME_ROWS, UNKNOWN, write_crm

from needs_rec.cli import run_cli
from training import validate


@pytest.fixture
def cli(capsys, tmp_path, tiny_dictionaries, tiny_dictionaries_dir):
    """cli(**write_crm knobs) → (exit code, stdout, stderr) for a CRM written with those knobs."""

    def invoke(**knobs):
        data = write_crm(tmp_path / "crm", tiny_dictionaries, **knobs)
        with pytest.raises(SystemExit) as exited:
            run_cli(validate.main, ["--data", str(data), "--dictionaries", str(tiny_dictionaries_dir)])
        out, err = capsys.readouterr()
        return exited.value.code, out, err

    return invoke


def assert_error(result, *fragments: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


def assert_warning(result, *fragments: str) -> str:
    code, out, err = result
    assert code == 0, err
    assert "warnings (" in out
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in {out!r}"
    return out


# --- clean ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_clean_data_exits_0_and_prints_the_report(cli, fmt):
    code, out, err = cli(fmt=fmt)
    assert code == 0 and err == ""
    assert f"outcomes.{fmt}: {N_OUTCOME_ROWS} rows" in out
    assert "episodes (contact, date, stage):" in out
    assert out.strip().endswith("OK: no problems found")


def test_report_never_prints_personal_data(cli):
    code, out, _ = cli(unknown_code=True, missing_optional=True)
    assert code == 0
    for value in ("Иван", "example.ru", "+7 900", "Ромашка", "7701234567"):
        assert value not in out


# --- errors (exit 2, one line naming file, column and values) -----------------------------


@pytest.mark.parametrize("table", ["organizations", "contacts", "outcomes"])
def test_missing_file(cli, table):
    assert_error(cli(missing_file=table), f"missing file {table}.csv", f"{table}.parquet")


def test_both_csv_and_parquet_for_one_table(cli):
    assert_error(cli(both_formats="contacts"), "both contacts.csv and contacts.parquet")


@pytest.mark.parametrize(
    ("table", "column"),
    [("organizations", "industry"), ("contacts", "org_id"), ("outcomes", "occurred_on"), ("outcomes", "outcome")],
)
def test_missing_required_column(cli, table, column):
    assert_error(cli(drop_column=(table, column)), f"{table}.csv", "missing required column", repr(column))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("table", ["organizations", "contacts", "outcomes"])
def test_empty_table(cli, table, fmt):
    assert_error(cli(empty_table=table, fmt=fmt), f"{table}.{fmt}: empty table")


@pytest.mark.parametrize(
    ("table", "column"), [("organizations", "org_id"), ("contacts", "position"), ("outcomes", "characteristic")]
)
def test_empty_required_value(cli, table, column):
    assert_error(
        cli(empty_required=(table, column)), f"{table}.csv column {column!r}", "empty required value", "rows 2;"
    )


def test_duplicate_org_id(cli):
    assert_error(
        cli(duplicate_id="organizations"), "organizations.csv column 'org_id'", "duplicate", "'o1' (rows 1, 3)"
    )


def test_duplicate_contact_id(cli):
    assert_error(cli(duplicate_id="contacts"), "contacts.csv column 'contact_id'", "duplicate", "'c1' (rows 1, 3)")


def test_contact_whose_org_is_missing(cli):
    assert_error(cli(orphan_contact=True), "contacts.csv column 'org_id'", "contact 'c2' → org 'o404' (row 2)")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unparseable_date(cli, fmt):
    err = assert_error(cli(bad_date=True, fmt=fmt), f"outcomes.{fmt} column 'occurred_on'", "'2024-13-45' (row 3)")
    assert "ISO date" in err and "or empty" not in err  # a required date


def test_unparseable_optional_date(cli):
    err = assert_error(
        cli(edits=[("organizations", 1, "client_since", "01.02.2020")]),
        "organizations.csv column 'client_since'",
        "'01.02.2020' (row 1)",
    )
    assert "YYYY-MM-DD" in err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unparseable_number(cli, fmt):
    assert_error(cli(bad_number=True, fmt=fmt), f"organizations.{fmt} column 'employees'", "'many' (row 2)", "number")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_negative_count(cli, fmt):
    assert_error(cli(negative_count=True, fmt=fmt), f"organizations.{fmt} column 'revenue_mln'", "-5", "row 2", "≥ 0")


def test_invalid_outcome_value(cli):
    assert_error(cli(bad_outcome=True), "outcomes.csv column 'outcome'", "'maybe' (row 4)", "positive, negative")


def test_no_episode_with_a_positive_outcome(cli):
    assert_error(cli(no_positive=True), "outcomes.csv column 'outcome'", "no episode with a positive outcome")


@pytest.mark.parametrize(
    ("knob", "column", "value"),
    [
        ("unknown_contact_rows", "contact_id", "c404"),
        ("unknown_characteristic_rows", "characteristic", UNKNOWN),
        ("unknown_stage_rows", "stage", UNKNOWN),
    ],
)
def test_more_than_5_percent_of_outcome_rows_dropped_is_an_error(cli, knob, column, value):
    # 4 of 60 rows = 6.7% > 5%
    assert_error(cli(**{knob: 4}), "outcomes.csv", "4 of 60 outcome rows", "5%", f"column {column!r}", repr(value))


def test_dropped_rows_of_different_kinds_add_up_to_the_5_percent_budget(cli):
    assert_error(cli(unknown_contact_rows=2, unknown_stage_rows=4), "outcome rows", "more than the 5% allowed")


def test_several_problems_are_reported_together_on_one_line(cli):
    assert_error(cli(bad_number=True, bad_date=True), "'employees'", "'occurred_on'", "1 more problem")


# --- warnings (exit 0, counted in the report) ---------------------------------------------


def test_unknown_code_is_kept_with_a_warning(cli):
    out = assert_warning(
        cli(unknown_code=True),
        f"contacts.csv column 'position': 1 row with a code not in positions.yaml, kept and encoded as unknown: "
        f"{UNKNOWN!r}",
        "contacts.csv column 'interests': 1 row with a code not in needs.yaml",
    )
    assert "OK with 2 warning(s)" in out


@pytest.mark.parametrize(
    ("knob", "column", "value"),
    [
        ("unknown_contact_rows", "contact_id", "c404"),
        ("unknown_characteristic_rows", "characteristic", UNKNOWN),
        ("unknown_stage_rows", "stage", UNKNOWN),
    ],
)
def test_up_to_5_percent_unknown_outcome_rows_are_dropped_with_a_warning(cli, knob, column, value):
    # 3 of 60 rows = 5%, not more than 5%
    out = assert_warning(cli(**{knob: 3}), f"outcomes.csv column {column!r}: 3 rows dropped", repr(value))
    assert "57 kept, 3 dropped" in out


def test_missing_optional_values_are_kept_with_a_warning(cli):
    assert_warning(
        cli(missing_optional=True),
        "organizations.csv column 'region': 1 row with no value, kept and encoded as missing (org_id o1)",
        "organizations.csv column 'employees': 1 row with no value",
        "contacts.csv column 'department': 1 row with no value, kept and encoded as missing (contact_id c3)",
    )


def test_absent_optional_column_is_a_warning(cli):
    assert_warning(cli(drop_column=("contacts", "decision_role")), "contacts.csv column 'decision_role': column absent")


# --- the real entry point ---------------------------------------------------------------------


def test_module_entry_point_exit_codes(tmp_path, tiny_dictionaries, tiny_dictionaries_dir):
    good = write_crm(tmp_path / "good", tiny_dictionaries, unknown_code=True)
    bad = write_crm(tmp_path / "bad", tiny_dictionaries, duplicate_id="contacts")
    command = [sys.executable, "-m", "training.validate", "--dictionaries", str(tiny_dictionaries_dir), "--data"]
    ok = subprocess.run([*command, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK with 2 warning(s)" in ok.stdout
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith("error: contacts.csv column 'contact_id': duplicate")
    assert "Traceback" not in failed.stderr and failed.stderr.count("\n") == 1
    assert sorted(p.name for p in bad.iterdir()) == ["contacts.csv", "organizations.csv", "outcomes.csv"]


def test_missing_data_directory_is_a_one_line_error(capsys, tmp_path, tiny_dictionaries_dir):
    with pytest.raises(SystemExit) as exited:
        run_cli(validate.main, ["--data", str(tmp_path / "nowhere"), "--dictionaries", str(tiny_dictionaries_dir)])
    assert exited.value.code == 2
    assert "nowhere" in capsys.readouterr().err


def test_default_dictionaries_are_the_repos():
    assert (
        validate.parse_args(["--data", "x"]).dictionaries
        == Path(validate.__file__).resolve().parents[1] / "dictionaries"
    )
