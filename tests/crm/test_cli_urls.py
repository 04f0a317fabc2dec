"""The commands with a database URL for --data / --output (contract §5): training.sample writes
into a database, training.validate reads from one; errors are one line, exit 2, no password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from crm_factory import write_crm_database

from needs_rec import dictionaries, schema
from needs_rec.cli import run_cli
from training import validate

REPO = Path(__file__).resolve().parents[2]


def cli(module: str, *argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True, cwd=REPO, check=False,
        timeout=300,
    )


def test_sample_into_a_database_then_validate_it(database_url, open_crm, tmp_path):
    made = cli("training.sample", "--output", database_url, "--orgs", "40", "--seed", "3")
    assert made.returncode == 0, made.stderr
    assert "40 organizations" in made.stdout and "password" not in made.stdout
    directory = cli("training.sample", "--output", tmp_path / "dir", "--orgs", "40", "--seed", "3", "--no-oracle")
    assert directory.returncode == 0, directory.stderr
    dicts = dictionaries.load(REPO / "dictionaries")
    from_db = schema.validate(open_crm(database_url).read_crm(), dicts)[0]
    from_files = schema.validate(open_crm(tmp_path / "dir").read_crm(), dicts)[0]
    assert from_db.outcomes.equals(from_files.outcomes) and from_db.contacts.equals(from_files.contacts)
    again = cli("training.sample", "--output", database_url, "--orgs", "40")
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "already exist" in again.stderr


def test_validate_reads_a_database_url(capsys, database_url, tiny_dictionaries, tiny_dictionaries_dir):
    write_crm_database(database_url, tiny_dictionaries, unknown_code=True)
    with pytest.raises(SystemExit) as exited:
        run_cli(validate.main, ["--data", database_url, "--dictionaries", str(tiny_dictionaries_dir)])
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    assert "table 'outcomes': 60 rows" in out and "table 'contacts' column 'position'" in out


def test_validate_database_errors_are_one_line(capsys, database_url, tiny_dictionaries, tiny_dictionaries_dir):
    write_crm_database(database_url, tiny_dictionaries, bad_date=True)
    with pytest.raises(SystemExit) as exited:
        run_cli(validate.main, ["--data", database_url, "--dictionaries", str(tiny_dictionaries_dir)])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: table 'outcomes' column 'occurred_on'")


def test_unreachable_database_is_one_line_without_password(tiny_dictionaries_dir):
    result = cli("training.validate", "--data", "postgresql://crm:hunter2@127.0.0.1:9/crm",
                 "--dictionaries", tiny_dictionaries_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot list its tables" in result.stderr and "hunter2" not in result.stderr
