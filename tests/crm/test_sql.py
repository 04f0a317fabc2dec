"""crm.sql: a SQLite or PostgreSQL database as the CRM source — the same frames, errors and warnings
as files, tables or views, `?schema=`, lookups, search, and needs_rec's own tables."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

import pandas as pd
import pytest
import sqlalchemy as sa
from crm_factory import N_CONTACTS, N_OUTCOME_ROWS, crm_frames, write_crm, write_crm_database
from databases import postgres_base_url

import crm
from crm.write import write_tables
from needs_rec import schema
from needs_rec.errors import ConfigError, DataError, SourceUnavailable


def test_database_gives_the_same_validated_frames_as_files(open_crm, database_url, tmp_path, tiny_dictionaries):
    files = open_crm(write_crm(tmp_path / "files", tiny_dictionaries))
    database = open_crm(write_crm_database(database_url, tiny_dictionaries))
    raw = database.read_crm()
    assert set(raw) == {"organizations", "contacts", "outcomes"}  # no feedback table yet
    assert raw["contacts"].attrs["source"] == "table 'contacts'"
    assert raw["contacts"].attrs["personal_columns_dropped"] == ["full_name", "email", "phone"]
    assert len(raw["contacts"]) == N_CONTACTS and len(raw["outcomes"]) == N_OUTCOME_ROWS
    expected, expected_report = schema.validate(files.read_crm(), tiny_dictionaries)
    got, report = schema.validate(raw, tiny_dictionaries)
    for name in ("organizations", "contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name))
    assert report.episodes == expected_report.episodes and report.warnings_count == 0


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"bad_date": True}, "table 'outcomes' column 'occurred_on': 1 invalid value(s) '2024-13-45' (row 3)"),
        ({"orphan_contact": True}, "table 'contacts' column 'org_id': 1 contact(s) refer to an org_id"),
        ({"drop_column": ("contacts", "position")}, "table 'contacts': missing required column(s) 'position'"),
        ({"empty_table": "outcomes"}, "table 'outcomes': empty table"),
    ],
)
def test_errors_name_the_table(open_crm, database_url, tiny_dictionaries, knobs, message):
    source = open_crm(write_crm_database(database_url, tiny_dictionaries, **knobs))
    with pytest.raises(DataError) as caught:
        schema.validate(source.read_crm(), tiny_dictionaries)
    assert message in str(caught.value)


def test_warnings_name_the_table(open_crm, database_url, tiny_dictionaries):
    source = open_crm(write_crm_database(database_url, tiny_dictionaries, unknown_code=True))
    _, report = schema.validate(source.read_crm(), tiny_dictionaries)
    assert {(w.kind, w.file, w.column) for w in report.warnings} == {
        ("unknown_code", "table 'contacts'", "position"),
        ("unknown_code", "table 'contacts'", "interests"),
    }


def test_missing_table_is_named_with_what_is_there(open_crm, database_url, tiny_dictionaries):
    write_tables(database_url, {"organizations": pd.DataFrame({"org_id": ["o1"], "industry": ["it"]})})
    with pytest.raises(DataError, match=r"missing table contacts in .*: the contacts table \(or a view of that "
                       r"name\) is required; found: organizations"):
        open_crm(database_url).read_crm()


def test_views_map_a_firms_own_schema(open_crm, database_url, tmp_path, tiny_dictionaries):
    """A firm keeps its own table and column names; views named as in the contract map them."""
    frames = {p.stem: pd.read_csv(p, dtype=str, keep_default_na=False)
              for p in write_crm(tmp_path / "f", tiny_dictionaries, personal_data=False).glob("*.csv")}
    own_names = {"organizations": "firm_orgs", "contacts": "firm_people", "outcomes": "firm_calls"}
    renamed = {own_names[n]: df.rename(columns=lambda c: f"x_{c}") for n, df in frames.items()}
    write_tables(database_url, renamed)
    source = open_crm(database_url)
    prefix = f'"{source.schema}".' if source.schema else ""
    with source.engine.begin() as conn:
        for name, own in own_names.items():
            columns = ", ".join(f'"x_{c}" AS "{c}"' for c in frames[name].columns)
            conn.execute(sa.text(f'CREATE VIEW {prefix}"{name}" AS SELECT {columns} FROM {prefix}"{own}"'))
    crm_data, report = schema.validate(source.read_crm(), tiny_dictionaries)
    assert report.rows == {"organizations": 6, "contacts": N_CONTACTS, "outcomes": N_OUTCOME_ROWS}
    assert crm_data.contacts["contact_id"].iloc[0] == "c1"
    assert source.contact("c1") is not None


def test_postgresql_typed_columns_and_arrays_read_like_a_typed_parquet(open_crm, postgres_url, tiny_dictionaries):
    """Numbers, dates and text[] columns (a natural PostgreSQL CRM) validate like their text form."""
    text_url = postgres_url
    write_crm_database(text_url, tiny_dictionaries)
    source = open_crm(text_url)
    expected, _ = schema.validate(source.read_crm(), tiny_dictionaries)
    with source.engine.begin() as conn:
        s = f'"{source.schema}"'
        conn.execute(sa.text(f"ALTER TABLE {s}.organizations ALTER COLUMN employees TYPE double precision "
                             "USING NULLIF(employees, '')::double precision"))
        conn.execute(sa.text(f"ALTER TABLE {s}.organizations ALTER COLUMN client_since TYPE date "
                             "USING NULLIF(client_since, '')::date"))
        conn.execute(sa.text(f"ALTER TABLE {s}.contacts ALTER COLUMN interests TYPE text[] "
                             "USING string_to_array(NULLIF(interests, ''), ';')"))
        conn.execute(sa.text(f"ALTER TABLE {s}.outcomes ALTER COLUMN occurred_on TYPE date USING occurred_on::date"))
    got, _ = schema.validate(source.read_crm(), tiny_dictionaries)
    for name in ("organizations", "contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name))
    record = source.contact("c2")
    assert isinstance(record.contact["interests"], list) and isinstance(record.organization["employees"], float)


def test_postgresql_timestamptz_jsonb_and_uuid_columns_read_as_their_csv_export(
    open_crm, postgres_url, tiny_dictionaries, monkeypatch
):
    """A firm's typed columns, in a database whose time zone is not UTC: a timestamptz was read in UTC
    (01:00 in Moscow the day before, one day's episode split in two), a jsonb array as one code, and a
    uuid id was a traceback (Arrow's 16 raw bytes) and, in the service, a 500."""
    monkeypatch.setenv("PGTZ", "Europe/Moscow")  # libpq's session time zone, for psycopg and ADBC alike
    write_crm_database(postgres_url, tiny_dictionaries)
    source = open_crm(postgres_url)
    expected, _ = schema.validate(source.read_crm(), tiny_dictionaries)
    s = f'"{source.schema}"'
    with source.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {s}.outcomes ALTER COLUMN occurred_on TYPE timestamptz "
                             "USING occurred_on::date + interval '1 hour'"))
        conn.execute(sa.text(f"ALTER TABLE {s}.contacts ALTER COLUMN interests TYPE jsonb "
                             "USING to_jsonb(string_to_array(NULLIF(interests, ''), ';'))"))
    got, _ = schema.validate(source.read_crm(), tiny_dictionaries)
    for name in ("contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name))
    with source.engine.begin() as conn:
        for table in ("contacts", "outcomes"):
            conn.execute(sa.text(f"ALTER TABLE {s}.{table} ALTER COLUMN contact_id TYPE uuid "
                                 "USING md5(contact_id)::uuid"))
        c2 = conn.execute(sa.text("SELECT md5('c2')::uuid::text")).scalar_one()
    uuids = open_crm(postgres_url)
    got, _ = schema.validate(uuids.read_crm(), tiny_dictionaries)
    assert c2 in set(got.contacts["contact_id"]) and len(got.outcomes) == len(expected.outcomes)
    assert uuids.contact(c2).contact_id == c2 and uuids.contact(c2.upper()).contact_id == c2
    assert uuids.contact("c2") is None and uuids.display("not-a-uuid") is None  # a 404, not a database error


def test_materialized_views_are_read_like_views(open_crm, postgres_url, tiny_dictionaries):
    """Contract §5: "tables — or views"; a materialized view was "missing table … found: no tables"."""
    write_crm_database(postgres_url, tiny_dictionaries)
    source = open_crm(postgres_url)
    expected, _ = schema.validate(source.read_crm(), tiny_dictionaries)
    s = f'"{source.schema}"'
    with source.engine.begin() as conn:
        for name in ("organizations", "contacts", "outcomes"):
            conn.execute(sa.text(f"ALTER TABLE {s}.{name} RENAME TO firm_{name}"))
            conn.execute(sa.text(f"CREATE MATERIALIZED VIEW {s}.{name} AS SELECT * FROM {s}.firm_{name}"))
    viewed = open_crm(postgres_url)
    got, _ = schema.validate(viewed.read_crm(), tiny_dictionaries)
    for name in ("organizations", "contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name))
    assert viewed.contact("c2") == source.contact("c2")


def test_a_postgresql_view_that_fails_mid_read_names_its_table(open_crm, postgres_url, tiny_dictionaries):
    """ADBC raises OSError, not adbc.Error, when a row of a view fails (division by zero): a traceback
    in the CLIs, a 500 from the service's queries."""
    write_crm_database(postgres_url, tiny_dictionaries)
    source = open_crm(postgres_url)
    s = f'"{source.schema}"'
    with source.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {s}.organizations RENAME TO firm_orgs"))
        conn.execute(sa.text(f"CREATE VIEW {s}.organizations AS SELECT org_id, industry, "
                             f"(1 / (length(org_id) - length(org_id)))::text AS employees FROM {s}.firm_orgs"))
    with pytest.raises(DataError, match=r"table 'organizations' of .*: cannot be read \(.*division by zero\)"):
        open_crm(postgres_url).read_crm()


def test_contact_lookup_matches_the_files_and_search_finds_names(open_crm, database_url, tmp_path, tiny_dictionaries):
    files = open_crm(write_crm(tmp_path / "files", tiny_dictionaries))
    database = open_crm(write_crm_database(database_url, tiny_dictionaries))
    for contact_id in ("c1", "c2", "c12"):
        assert database.contact(contact_id) == files.contact(contact_id)
    record = database.contact("c2")
    assert record.org_id and record.organization["industry"] and isinstance(record.contact["interests"], list)
    assert database.contact("c404") is None and files.contact("c404") is None
    found = database.search("ИВАН ПЕТРОВ 1", limit=50)  # case-insensitive, Cyrillic included
    assert [row["contact_id"] for row in found] == [row["contact_id"] for row in files.search("иван петров 1", 50)]
    assert found and set(found[0]) == {"contact_id", "org_id", "organization", "contact", "position"}


def test_snapshot_leaves_out_a_row_no_request_could_carry(open_crm, database_url, tiny_dictionaries):
    """One contact whose organization has employees 'many' must not cost every other contact the
    snapshot (the service's cache); asked for by id, that contact reports its row's error."""
    database = open_crm(write_crm_database(database_url, tiny_dictionaries,
                                           edits=[("organizations", 1, "employees", "many")]))
    snapshot = database.snapshot(1000)
    assert snapshot is not None and len(snapshot) == N_CONTACTS - 2  # o1's contacts c1 and c7
    assert "c1" not in snapshot and "c7" not in snapshot and snapshot["c2"] == database.contact("c2")
    with pytest.raises(DataError, match="organizations column 'employees' for contact 'c1': 'many' is not a number"):
        database.contact("c1")


def test_integer_contact_ids_are_looked_up_as_integers_and_other_text_names_no_contact(
    open_crm, database_url, tiny_dictionaries
):
    """An integer contact_id column is compared as an integer; '³' (isdigit() but not int()), '--5'
    and twenty digits (past BIGINT) were a ValueError or a database error (a 500), now no contact."""
    frames = crm_frames(tiny_dictionaries, personal_data=False)
    for name in ("contacts", "outcomes"):
        frames[name]["contact_id"] = frames[name]["contact_id"].str[1:].astype("int64")
    write_tables(database_url, frames)
    database = open_crm(database_url)
    assert database.contact("3").contact_id == "3" and database.contact(" 3 ").contact_id == "3"
    assert database.display("3")["contact_id"] in (3, "3")
    for text in ("\u00b3", "--5", "9" * 20, "+3", "3.0", "c3"):
        assert database.contact(text) is None and database.display(text) is None, text


def test_sqlite_ids_in_a_column_declared_integer_are_found_as_text(open_crm, tmp_path, tiny_dictionaries):
    """SQLite keeps text in a column declared INTEGER; the lookup compared it as a number and found no
    'c2' (a 404 whenever the snapshot is off or the CRM is larger than the cache)."""
    url = write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries)
    source = open_crm(url)
    with source.engine.begin() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns("contacts")]
        others = ", ".join(f"{c} TEXT" for c in columns if c != "contact_id")
        conn.execute(sa.text("ALTER TABLE contacts RENAME TO contacts_old"))
        conn.execute(sa.text(f"CREATE TABLE contacts (contact_id INTEGER, {others})"))
        conn.execute(sa.text(f"INSERT INTO contacts SELECT {', '.join(columns)} FROM contacts_old"))
        conn.execute(sa.text("DROP TABLE contacts_old"))
    assert open_crm(url).contact("c2").contact_id == "c2"


def test_a_name_that_is_not_utf8_never_fails_lookups_or_search(open_crm, tmp_path, tiny_dictionaries):
    """SQLite keeps whatever bytes a TEXT value was given: c1's full_name holding b'\\xcf\\xf0\\xe8' made
    every read of that row fail (the pages answered 503 for it); now the byte shows as U+FFFD."""
    url = write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries)
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE contacts SET full_name = CAST(X'CFF0E8' AS TEXT) WHERE contact_id = 'c1'"))
    database = open_crm(url)
    assert database.display("c1")["contact"] == "\ufffd\ufffd\ufffd"
    assert [row["contact_id"] for row in database.search("c1", 50)][:1] == ["c1"]
    assert database.contact("c1").contact_id == "c1"


def search_both(open_crm, database_url, tmp_path, dictionaries, edits) -> list[Callable[[str], list[str]]]:
    """`ids(query)`: the contact ids `search` finds (at most 50), for the CRM with `edits` as files, then in the DB."""
    files = open_crm(write_crm(tmp_path / "files", dictionaries, edits=edits))
    database = open_crm(write_crm_database(database_url, dictionaries, edits=edits))
    return [lambda query, source=source: [row["contact_id"] for row in source.search(query, 50)]
            for source in (files, database)]


def test_search_takes_words_in_any_order_and_e_for_yo(open_crm, database_url, tmp_path, tiny_dictionaries):
    """«Киселева» did not find «Киселёва», and «Тимур Степанов» found nothing when the CRM says «Степанов Тимур»."""
    edits = [("contacts", 3, "full_name", "Киселёва Алёна"), ("contacts", 4, "full_name", "Степанов Тимур 100%")]
    for ids in search_both(open_crm, database_url, tmp_path, tiny_dictionaries, edits):
        assert ids("алена  КИСЕЛЕВА") == ids("Киселёва") == ["c3"]
        assert ids("Тимур Степанов") == ids("степанов\tтимур") == ["c4"]
        assert ids("100%") == ["c4"] and ids("10_%") == [] and ids("Тимур Петров") == []  # % and _ are characters
        assert ids("Петров 5") == ["c6"]  # the phrase first: its words alone would also match c5 …
        assert len(ids("")) == min(50, N_CONTACTS)


def test_search_finds_words_typed_with_quotes_commas_or_initials(open_crm, database_url, tmp_path, tiny_dictionaries):
    """A manager types «ООО "Ромашка"» for a CRM name written «ООО «Ромашка»», «Петров, Иван» or «Петров И.»:
    each word kept its quote, comma or period, so nothing was found; the words are also tried bare."""
    edits = [("organizations", 1, "name", "ООО «Лютик»"), ("contacts", 1, "full_name", "Тополев Иван")]
    for ids in search_both(open_crm, database_url, tmp_path, tiny_dictionaries, edits):
        in_lyutik = ids("Лютик")
        assert in_lyutik and "c1" in in_lyutik
        assert ids('ООО "Лютик"') == ids("'Лютик'") == ids("„Лютик“,") == in_lyutik
        assert ids("Тополев, Иван") == ids("Тополев И.") == ids("(Тополев)") == ["c1"]
        assert ids("«Тополев»  Петров") == []  # every word still has to be there


def test_feedback_is_stored_once_then_duplicate_or_conflict(open_crm, database_url, tiny_dictionaries):
    source = open_crm(write_crm_database(database_url, tiny_dictionaries))
    event = crm.FeedbackEvent("fb-1", "c1", "demo", "ch_price", "positive", "2024-03-01", request_id="r1")
    assert source.add_feedback(event) is crm.FeedbackResult.STORED
    assert source.add_feedback(event) is crm.FeedbackResult.DUPLICATE
    changed = crm.FeedbackEvent("fb-1", "c1", "demo", "ch_price", "negative", "2024-03-01", request_id="r1")
    assert source.add_feedback(changed) is crm.FeedbackResult.CONFLICT
    retry_without_date = crm.FeedbackEvent(
        "fb-1", "c1", "demo", "ch_price", "positive", "2024-03-09", request_id="r1", occurred_on_given=False
    )
    assert source.add_feedback(retry_without_date) is crm.FeedbackResult.DUPLICATE
    [row] = source.recent_feedback()
    assert row["feedback_id"] == "fb-1" and row["outcome"] == "positive" and row["received_at"] is not None
    _, report = schema.validate(source.read_crm(), tiny_dictionaries)
    assert "  table 'feedback': 1 row" in report.lines()  # one row, not "1 rows"
    # the manager's card reads the contact's answers of one day (a date compared with the stored date)
    assert source.feedback_on("c1", dt.date(2024, 3, 1)) == [
        {"stage": "demo", "characteristic": "ch_price", "outcome": "positive"}]
    assert source.feedback_on("c1", dt.date(2024, 3, 2)) == [] and source.feedback_on("c2", dt.date(2024, 3, 1)) == []


def read_only(source) -> None:
    """Every new connection of `source` refuses writes, as a database made read-only does (SQLite's
    query_only; PostgreSQL's default_transaction_read_only), and the pooled ones are let go."""
    statement = ("PRAGMA query_only = ON" if source.dialect == "sqlite"
                 else "SET default_transaction_read_only = on")

    @sa.event.listens_for(source.engine, "connect")
    def _refuse_writes(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        if source.dialect == "postgresql":
            dbapi_connection.commit()

    source.engine.dispose()


def test_a_retry_is_answered_by_a_read_while_the_database_refuses_writes(open_crm, database_url, tiny_dictionaries):
    """Contract §6: a stored feedback_id sent again is a duplicate (same content) or a conflict, which
    needs only a read; a read-only database made it the write's 503."""
    source = open_crm(write_crm_database(database_url, tiny_dictionaries))
    event = crm.FeedbackEvent("fb-ro", "c1", "demo", "ch_price", "positive", "2024-03-01", request_id="r1")
    assert source.add_feedback(event) is crm.FeedbackResult.STORED
    read_only(source)
    assert source.add_feedback(event) is crm.FeedbackResult.DUPLICATE
    changed = crm.FeedbackEvent("fb-ro", "c1", "demo", "ch_price", "negative", "2024-03-01", request_id="r1")
    assert source.add_feedback(changed) is crm.FeedbackResult.CONFLICT
    new = crm.FeedbackEvent("fb-new", "c1", "demo", "ch_price", "positive", "2024-03-01")
    with pytest.raises(SourceUnavailable, match="cannot store the feedback"):
        source.add_feedback(new)
    assert [row["feedback_id"] for row in source.recent_feedback()] == ["fb-ro"]


def firms_table(source, sql: str) -> None:
    """Run a firm's own CREATE TABLE (and inserts) in the source's database and schema."""
    with source.engine.begin() as conn:
        if source.schema:
            conn.execute(sa.text(f'SET search_path TO "{source.schema}"'))
        for statement in sql.split(";"):
            conn.execute(sa.text(statement))


@pytest.mark.parametrize(
    ("table", "sql", "missing"),
    [
        ("feedback", "CREATE TABLE feedback (id integer PRIMARY KEY, contact_id text, comment text);"
                     "INSERT INTO feedback VALUES (1, 'c1', 'called back')",
         "feedback_id, occurred_on, stage, characteristic, outcome, manager_id, request_id, model_version, "
         "received_at"),
        ("exposures", "CREATE TABLE exposures (id integer PRIMARY KEY, campaign text, shown_at text);"
                      "INSERT INTO exposures VALUES (1, 'spring', '2024-03-01')",
         "request_id, served_at, model_version, contact_id, stage, characteristic, rank, probability, selected"),
    ],
)
def test_a_firms_own_feedback_or_exposures_table_is_refused_and_never_written(
    open_crm, database_url, tiny_dictionaries, table, sql, missing
):
    """Contract §5: needs_rec writes only its own tables. A firm's table of the same name was taken as
    needs_rec's: every feedback a 503 forever, every exposure dropped with a reason nobody could read."""
    source = open_crm(write_crm_database(database_url, tiny_dictionaries))
    firms_table(source, sql)
    expected = rf"table '{table}'.* is not needs_rec's own {table} table \(it lacks column\(s\) {missing}\)"
    with pytest.raises(DataError, match=expected) as refused:
        source.check_tables()  # the service's start-up check
    assert ("?schema=NAME" in str(refused.value)) is (source.dialect == "postgresql")
    with pytest.raises(DataError, match=expected):  # a table the firm adds while the service runs: never written
        if table == "feedback":
            source.add_feedback(crm.FeedbackEvent("fb-1", "c1", "demo", "ch_price", "positive", "2024-03-01"))
        else:
            source.add_exposures([{"request_id": "r1", "served_at": pd.Timestamp.now(tz="UTC"), "model_version": 1,
                                   "stage": "demo", "characteristic": "ch_price", "rank": 1, "probability": 0.5,
                                   "selected": True}])
    if table == "feedback":
        with pytest.raises(DataError, match=expected):  # training.validate / fit read it as feedback
            source.read_crm()
    with source.engine.connect() as conn:
        prefix = f'"{source.schema}".' if source.schema else ""
        assert conn.execute(sa.text(f"SELECT count(*) FROM {prefix}{table}")).scalar_one() == 1


def test_training_reads_feedback_beside_outcomes_counting_an_event_once(open_crm, database_url, tiny_dictionaries):
    source = open_crm(write_crm_database(database_url, tiny_dictionaries))
    first = source.read_table("outcomes").iloc[0]
    already = crm.FeedbackEvent("fb-a", first["contact_id"], first["stage"], first["characteristic"],
                                first["outcome"], first["occurred_on"])
    new = crm.FeedbackEvent("fb-b", "c3", "deal", "ch_support", "positive", "2024-06-03")
    for event in (already, new):
        assert source.add_feedback(event) is crm.FeedbackResult.STORED
    frames = source.read_crm()
    assert len(frames["feedback"]) == 2 and frames["feedback"].attrs["source"]
    data, report = schema.validate(frames, tiny_dictionaries)
    assert report.rows["feedback"] == 2
    assert report.notes["outcome_rows_from_feedback"] == 1 and report.notes["feedback_rows_already_counted"] == 1
    assert len(data.outcomes) == N_OUTCOME_ROWS + 1
    assert "incl. 1 from feedback" in str(report)


def test_positive_only_outcomes_are_a_normal_crm(open_crm, database_url, tiny_dictionaries):
    url = write_crm_database(database_url, tiny_dictionaries)
    source = open_crm(url)
    with source.engine.begin() as conn:
        table = f'"{source.schema}".outcomes' if source.schema else "outcomes"
        conn.execute(sa.text(f"DELETE FROM {table} WHERE outcome = 'negative'"))
    data, report = schema.validate(source.read_crm(), tiny_dictionaries)
    assert set(data.outcomes["outcome"]) == {"positive"} and report.positive_episodes > 0
    assert report.warnings_count == 0


def test_existing_tables_are_never_overwritten(database_url, tiny_dictionaries):
    write_crm_database(database_url, tiny_dictionaries)
    with pytest.raises(ConfigError, match=r"table.s. contacts, organizations, outcomes already exist; nothing is "
                       "overwritten"):
        write_crm_database(database_url, tiny_dictionaries)


def test_writing_into_a_file_that_is_no_database_is_a_config_error(tmp_path, tiny_dictionaries):
    path = tmp_path / "notes.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cannot be written \(file is not a database\); give a new file"):
        write_tables(f"sqlite:///{path}", crm_frames(tiny_dictionaries))
    assert path.read_text(encoding="utf-8") == "hello"  # left as it was


def test_unreachable_database_is_source_unavailable_without_the_password(open_crm):
    source = open_crm("postgresql+psycopg://user:s3cret@127.0.0.1:9/crm")
    for action in (source.read_crm, lambda: source.contact("c1"),
                   lambda: source.add_feedback(crm.FeedbackEvent("f", "c1", "demo", "ch_price", "positive",
                                                                 "2024-01-01"))):
        with pytest.raises(SourceUnavailable) as caught:
            action()
        assert "s3cret" not in str(caught.value) and "127.0.0.1:9/crm" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:pw@h/db", "unsupported database 'mysql'"),
        ("sqlite://", "give the SQLite file"),
        ("sqlite:///:memory:", "an in-memory database is gone when the command ends"),  # 'wrote' it, exit 0
        ("sqlite:///crm.db?mode=ro", "unknown option(s) mode for a SQLite file"),  # SQLAlchemy's warning, then ignored
        ("sqlite:///x.db?schema=a", "?schema= is for PostgreSQL"),
        # a traceback (ValueError from int() / ipaddress) before
        ("postgresql+psycopg://u:pw@host:notaport/db", "not a database URL (the port must be a number)"),
        ("postgresql://u:pw@[::1:1/db", "not a database URL"),
    ],
)
def test_bad_urls_are_config_errors(open_crm, url, message):
    with pytest.raises(ConfigError) as caught:
        open_crm(url)
    assert message in str(caught.value) and "pw" not in str(caught.value)


def test_missing_sqlite_file_is_never_created(open_crm, tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(DataError, match=r"SQLite database .* does not exist"):
        open_crm(f"sqlite:///{path}").read_crm()
    assert not path.exists()


def test_a_firms_sqlite_file_keeps_its_journal_mode(open_crm, tmp_path, tiny_dictionaries):
    """Reading a firm's SQLite CRM (validate, fit, lookups) and adding needs_rec's tables leaves the file's
    persistent journal mode as the firm set it; only needs_rec's own file (`needs_rec.db`) runs in WAL."""
    import sqlite3

    def journal_mode(path) -> str:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    path = tmp_path / "crm.db"
    source = open_crm(write_crm_database(f"sqlite:///{path}", tiny_dictionaries))
    assert journal_mode(path) == "delete"  # SQLite's default, as the firm's file came
    schema.validate(source.read_crm(), tiny_dictionaries)
    assert source.contact("c1") is not None
    event = crm.FeedbackEvent("fb-j", "c1", "demo", "ch_price", "positive", "2024-03-01")
    assert source.add_feedback(event) is crm.FeedbackResult.STORED
    source.close()
    assert journal_mode(path) == "delete" and not (tmp_path / "crm.db-wal").exists()

    directory = open_crm(write_crm(tmp_path / "files", tiny_dictionaries))
    assert directory.add_feedback(event) is crm.FeedbackResult.STORED
    assert journal_mode(tmp_path / "files" / "needs_rec.db") == "wal"


@pytest.mark.parametrize("bad", [("CAST(? AS TEXT)", "Бухгалтерия".encode("cp1251")), ("?", b"\xc0\xff\xee")])
def test_text_that_is_not_utf8_in_sqlite_is_named_not_a_traceback(open_crm, tmp_path, tiny_dictionaries, bad):
    """A legacy cp1251 CRM (or a BLOB in a text column) crashed validation with Arrow's 'Invalid UTF8'."""
    import sqlite3

    url = write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", tiny_dictionaries)
    expression, value = bad
    with sqlite3.connect(tmp_path / "crm.db") as db:
        db.execute(f"UPDATE contacts SET department = {expression} WHERE rowid = 4", (value,))
    with pytest.raises(DataError) as caught:
        open_crm(url).read_table("contacts")
    assert str(caught.value) == ("table 'contacts' column 'department': not UTF-8 text (row 4); the CRM's text must "
                                 "be UTF-8 (convert the column, e.g. from cp1251)")


def test_a_database_url_that_names_no_database_says_check_the_url_not_retry_later(open_crm):
    """A misspelt database or role in the URL is refused at every connection: 'retry later' (right for a
    server that is down) sent the operator waiting for something that never comes."""
    base = postgres_base_url()
    _, _, rest = base.rpartition("@")
    for url in (f"{base.rsplit('/', 1)[0]}/no_such_db_7f3a", f"postgresql+psycopg://no_such_role_7f3a@{rest}"):
        with pytest.raises(SourceUnavailable) as caught:
            open_crm(url).read_crm()
        message = str(caught.value)
        assert "does not exist" in message and "retry later" not in message, message
        assert "check the URL" in message, message
    with pytest.raises(SourceUnavailable, match="retry later"):  # a server that does not answer: it may come back
        open_crm("postgresql+psycopg://user:s3cret@127.0.0.1:9/crm").read_crm()


def test_a_service_start_refuses_a_database_that_refuses_its_url_and_waits_for_one_that_is_down(tmp_path):
    """`serving --crm` with a misspelt database name, or a SQLite path to a file that is no database, started
    a ready service whose every lookup and feedback answered 503 forever: a wrong database is one line at
    start-up. A server that does not answer now may come up later, so it still starts."""
    not_a_database = tmp_path / "crm.yaml"
    not_a_database.write_text("network: {}\n", encoding="utf-8")
    base = postgres_base_url()
    for url in (f"sqlite:///{not_a_database}", f"{base.rsplit('/', 1)[0]}/no_such_db_7f3a"):
        with pytest.raises(DataError) as caught:
            crm.check_tables(url, flag="--crm")
        assert str(caught.value).startswith("--crm: CRM database "), str(caught.value)
        assert "retry later" not in str(caught.value)
    crm.check_tables("postgresql+psycopg://user:s3cret@127.0.0.1:9/crm", flag="--crm")  # down now: no error
