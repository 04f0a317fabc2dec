"""crm.sqlite_reader: SQLite tables read by one long-lived reader process per source — reused for
every table, ended by close() (no zombie) or when the parent dies, a large table split over rowid
ranges giving exactly one plain read's rows in its order, views and WITHOUT ROWID tables read whole."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from crm_factory import write_crm, write_crm_database

import crm.sql
from crm.sqlite_reader import EXIT_DATA, Reader, ReaderError
from needs_rec import schema
from needs_rec.errors import DataError


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """The process has ended and been reaped: no /proc entry, not even a zombie's."""
    end = time.monotonic() + within_s
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _outcomes_db(path: Path, rows: int = 1_000) -> str:
    """A SQLite file with an outcomes-like table: gaps in the rowids, NULLs, numbers and text mixed."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE outcomes (contact_id TEXT, occurred_on TEXT, stage TEXT, characteristic, outcome)")
        conn.executemany(
            "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?)",
            [
                (f"c{i}", f"2024-01-{1 + i % 28:02d}", None if i % 7 == 0 else "demo", i if i % 5 == 0 else f"ch{i}",
                 "positive" if i % 3 else "negative")
                for i in range(rows)
            ],
        )
        conn.execute("DELETE FROM outcomes WHERE rowid % 11 = 0 OR rowid BETWEEN 300 AND 420")
        conn.execute("CREATE VIEW outcomes_view AS SELECT * FROM outcomes WHERE stage IS NOT NULL")
        conn.execute("CREATE TABLE keyed (contact_id TEXT PRIMARY KEY, stage TEXT) WITHOUT ROWID")
        conn.executemany("INSERT INTO keyed VALUES (?, ?)", [(f"k{i:04d}", "demo") for i in range(500)])
        conn.execute("CREATE TABLE shadowed (rowid TEXT, contact_id TEXT)")  # a column named rowid
        conn.executemany("INSERT INTO shadowed VALUES (?, ?)", [(f"r{999 - i}", f"c{i}") for i in range(500)])
    return f"sqlite:///{path}"


def _read(source: crm.sql.SqlSource, relation: str, columns: list[str]) -> pd.DataFrame:
    table = source._read_arrow(relation, columns, dict.fromkeys(columns))
    return table.to_pandas()


def test_one_reader_process_serves_every_table_and_close_ends_it(open_crm, tmp_path, tiny_dictionaries):
    source = open_crm(write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries))
    source.read_crm()
    pid = source._reader.pid
    assert pid is not None
    source.read_table("outcomes")
    source.read_crm()
    assert source._reader.pid == pid  # reused, not one process per table
    source.close()
    assert _gone(pid)  # stopped and waited for: no zombie left
    assert len(source.read_table("contacts")) > 0  # a later read starts a new one
    assert source._reader.pid not in (None, pid)


def test_a_reader_killed_while_idle_is_replaced_without_failing_a_read(open_crm, tmp_path, tiny_dictionaries):
    source = open_crm(write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries))
    expected = source.read_table("outcomes")
    pid = source._reader.pid
    os.kill(pid, signal.SIGKILL)
    pd.testing.assert_frame_equal(source.read_table("outcomes"), expected)
    assert source._reader.pid != pid
    assert _gone(pid)  # the dead one was waited for


def test_range_split_gives_the_rows_of_one_read_in_its_order(open_crm, tmp_path, monkeypatch):
    source = open_crm(_outcomes_db(tmp_path / "crm.db"))
    columns = ["contact_id", "occurred_on", "stage", "characteristic", "outcome"]
    monkeypatch.setattr(crm.sql, "SPLIT_ROWS", 10**9)
    assert len(source._sqlite_queries("outcomes", columns, columns)) == 1
    whole = _read(source, "outcomes", columns)
    plain = pd.read_sql("SELECT * FROM outcomes", sqlite3.connect(tmp_path / "crm.db"))
    assert whole["contact_id"].tolist() == plain["contact_id"].tolist()  # a plain SELECT's order
    assert whole["stage"].tolist().count("") == plain["stage"].isna().sum()  # NULL → ""
    assert "5" in whole["characteristic"].tolist()  # an integer cell is read as its text
    for readers in (2, 3):
        monkeypatch.setattr(crm.sql, "SPLIT_ROWS", 10)
        monkeypatch.setattr(crm.sql, "SQLITE_READERS", readers)
        assert len(source._sqlite_queries("outcomes", columns, columns)) == readers
        pd.testing.assert_frame_equal(_read(source, "outcomes", columns), whole)


def test_views_without_rowid_tables_and_a_rowid_column_read_whole_or_by_another_alias(
    open_crm, tmp_path, monkeypatch
):
    source = open_crm(_outcomes_db(tmp_path / "crm.db"))
    monkeypatch.setattr(crm.sql, "SPLIT_ROWS", 10)
    connection = sqlite3.connect(tmp_path / "crm.db")
    for relation, columns in (("outcomes_view", ["contact_id", "stage"]), ("keyed", ["contact_id", "stage"])):
        assert len(source._sqlite_queries(relation, columns, columns)) == 1
        expected = pd.read_sql(f"SELECT {', '.join(columns)} FROM {relation}", connection)
        assert _read(source, relation, columns).equals(expected)
    queries = source._sqlite_queries("shadowed", ["contact_id"], ["rowid", "contact_id"])
    assert len(queries) == 2 and all("_rowid_" in q for q in queries)
    assert _read(source, "shadowed", ["contact_id"])["contact_id"].tolist() == [f"c{i}" for i in range(500)]


def test_split_reads_give_the_same_validated_frames_as_files(open_crm, tmp_path, tiny_dictionaries, monkeypatch):
    monkeypatch.setattr(crm.sql, "SPLIT_ROWS", 2)
    files = open_crm(write_crm(tmp_path / "files", tiny_dictionaries))
    database = open_crm(write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries))
    expected, _ = schema.validate(files.read_crm(), tiny_dictionaries)
    got, _ = schema.validate(database.read_crm(), tiny_dictionaries)
    for name in ("organizations", "contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name))


def test_a_failed_query_is_reported_and_the_reader_serves_the_next(tmp_path):
    url = _outcomes_db(tmp_path / "crm.db", rows=50)
    reader = Reader(url.removeprefix("sqlite:///"))
    try:
        with pytest.raises(ReaderError) as caught:
            reader.read(["SELECT 1 AS x", "SELECT x FROM no_such_table"])
        assert caught.value.code == EXIT_DATA and "no_such_table" in caught.value.reason
        pid = reader.pid
        batches = reader.read(["SELECT contact_id FROM outcomes ORDER BY rowid"])
        assert sum(b.num_rows for b in batches) > 0 and reader.pid == pid
    finally:
        reader.close()
    assert _gone(pid)


def test_concurrent_reads_of_one_source_take_turns(open_crm, tmp_path, tiny_dictionaries):
    source = open_crm(write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries))
    expected = {name: source.read_table(name) for name in ("contacts", "outcomes")}
    got: dict[str, list[pd.DataFrame]] = {name: [] for name in expected}

    def read(name: str) -> None:
        for _ in range(5):
            got[name].append(source.read_table(name))

    threads = [threading.Thread(target=read, args=(name,)) for name in expected for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, frames in got.items():
        assert len(frames) == 10
        for frame in frames:
            pd.testing.assert_frame_equal(frame, expected[name])


def test_missing_table_in_the_reader_is_a_data_error_naming_it(open_crm, tmp_path):
    source = open_crm(_outcomes_db(tmp_path / "crm.db", rows=20))
    with pytest.raises(DataError, match=r"table 'gone' of .*: cannot be read \(.*no such table"):
        source._read_arrow("gone", ["contact_id"], {"contact_id": None})


def test_the_reader_ends_when_its_parent_dies(tmp_path):
    url = _outcomes_db(tmp_path / "crm.db", rows=20)
    program = textwrap.dedent(
        f"""
        import os, sys
        from crm.sqlite_reader import Reader
        reader = Reader({url.removeprefix("sqlite:///")!r})
        reader.read(["SELECT 1 AS x"])
        print(reader.pid, flush=True)
        os._exit(0)  # no finalizer, no close(): only the kernel closes the child's stdin
        """
    )
    root = str(Path(crm.sql.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60)
    pid = int(out.stdout.strip())
    end = time.monotonic() + 10
    while time.monotonic() < end:  # orphaned: gone, or a zombie where PID 1 does not reap
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"reader {pid} still running after its parent exited")
