"""crm.source: every source says itself whether it is there (`check_exists`), and `check_location`
asks it with the flag in front, without contacting a database server."""

from __future__ import annotations

import sqlite3

import pytest

import crm
from needs_rec.errors import ConfigError, DataError


def test_each_source_says_whether_it_exists(tmp_path):
    missing_dir = crm.open_source(tmp_path / "nope")
    with pytest.raises(DataError, match=r"CRM data directory '.*nope' does not exist"):
        missing_dir.check_exists()
    missing_file = crm.open_source(f"sqlite:///{tmp_path / 'nope.db'}")
    with pytest.raises(DataError, match=r"SQLite database '.*nope\.db' does not exist"):
        missing_file.check_exists()
    sqlite3.connect(tmp_path / "crm.db").close()
    crm.open_source(f"sqlite:///{tmp_path / 'crm.db'}").check_exists()
    crm.open_source(tmp_path).check_exists()


def test_check_location_names_the_flag_and_leaves_servers_alone(tmp_path):
    with pytest.raises(DataError, match=r"^--crm: SQLite database '.*nope\.db' does not exist"):
        crm.check_location(f"sqlite:///{tmp_path / 'nope.db'}", flag="--crm")
    with pytest.raises(DataError, match=r"^--data: CRM data directory"):
        crm.check_location(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unsupported database"):
        crm.check_location("mysql://host/db", flag="--crm")
    # Nothing listens on port 1: a server that is not up yet is not a reason to refuse to start.
    crm.check_location("postgresql://u:secret@127.0.0.1:1/crm?schema=x", flag="--crm")
    assert not list(tmp_path.iterdir())  # checking created no file


def test_reads_check_first(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        crm.open_source(tmp_path / "nope").read_crm()
    with pytest.raises(DataError, match="does not exist"):
        crm.open_source(f"sqlite:///{tmp_path / 'nope.db'}").read_table("contacts")
    assert not (tmp_path / "nope.db").exists()  # a read never creates the firm's file


def test_check_tables_names_a_missing_table_or_column_and_leaves_a_down_server_alone(tmp_path, tiny_dictionaries):
    """A service started on the wrong database answered ready and failed its queries with a retryable 503."""
    from crm_factory import crm_frames, write_crm

    from crm.write import write_tables

    frames = crm_frames(tiny_dictionaries)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_tables(url, {"organizations": frames["organizations"], "contacts": frames["contacts"]})
    with pytest.raises(DataError, match=r"^--crm: missing table outcomes in .*: the outcomes table \(or a view"):
        crm.check_tables(url, flag="--crm")
    write_tables(url, {"outcomes": frames["outcomes"].drop(columns=["stage"])})
    with pytest.raises(DataError, match=r"^--crm: table 'outcomes'.*stage"):
        crm.check_tables(url, flag="--crm")

    directory = write_crm(tmp_path / "files", tiny_dictionaries)
    crm.check_tables(directory, flag="--crm")
    (directory / "outcomes.csv").unlink()
    with pytest.raises(DataError, match=r"^--crm: missing file outcomes.csv \(or outcomes.parquet\)"):
        crm.check_tables(directory, flag="--crm")
    crm.check_tables("postgresql://u:secret@127.0.0.1:1/crm", flag="--crm")  # down now: it may come up later
