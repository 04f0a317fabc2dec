"""crm.files: reading CRM tables from CSV and Parquet (the directory source)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crm_factory import N_CONTACTS, N_OUTCOME_ROWS, PERSONAL, crm_frames, write_crm

from crm import files as data
from needs_rec import schema
from needs_rec.errors import DataError


def test_read_crm_keeps_contract_columns_as_text(tmp_path, tiny_dictionaries):
    frames = data.read_crm(write_crm(tmp_path, tiny_dictionaries))
    assert set(frames) == {"organizations", "contacts", "outcomes"}
    contacts = frames["contacts"]
    assert list(contacts.columns) == [c.name for c in schema.CONTACTS.columns]
    assert len(contacts) == N_CONTACTS and len(frames["outcomes"]) == N_OUTCOME_ROWS
    assert all(isinstance(dtype, pd.StringDtype) for dtype in contacts.dtypes)
    assert contacts.attrs["source"] == "contacts.csv"
    assert frames["organizations"].loc[1, "industry"] == " RETAIL "  # raw: normalising is validation's job
    assert contacts["interests"].eq("").any()  # empty stays "", never NaN
    assert not contacts.isna().any().any()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_personal_data_columns_are_dropped_on_read(tmp_path, tiny_dictionaries, fmt):
    frames = data.read_crm(write_crm(tmp_path, tiny_dictionaries, fmt=fmt))
    contacts, orgs = frames["contacts"], frames["organizations"]
    assert not {c.lower() for c in PERSONAL["contacts"]} & {c.lower() for c in contacts.columns}
    assert not set(PERSONAL["organizations"]) & set(orgs.columns)
    assert "notes" not in contacts.columns  # extra columns too
    assert contacts.attrs["personal_columns_dropped"] == ["full_name", "email", "phone"]  # "Email" matched in any case
    for df in frames.values():
        text = df.to_csv()
        assert "Иван" not in text and "example.ru" not in text and "Ромашка" not in text


def test_csv_and_parquet_give_identical_validated_frames(tmp_path, tiny_dictionaries):
    csv = schema.validate(data.read_crm(write_crm(tmp_path / "csv", tiny_dictionaries, fmt="csv")), tiny_dictionaries)
    parquet = schema.validate(
        data.read_crm(write_crm(tmp_path / "pq", tiny_dictionaries, fmt="parquet")), tiny_dictionaries
    )
    # the Parquet files are typed (float numbers, date32 dates, list<string> multi fields): see crm_factory
    assert pq.read_schema(tmp_path / "pq" / "contacts.parquet").field("interests").type == pa.list_(pa.string())
    assert pq.read_schema(tmp_path / "pq" / "organizations.parquet").field("client_since").type == pa.date32()
    for name in ("organizations", "contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(csv[0], name), getattr(parquet[0], name))
    assert csv[1].to_dict()["episodes"] == parquet[1].to_dict()["episodes"]


def test_parquet_list_column_for_interests_is_joined(tmp_path):
    path = tmp_path / "contacts.parquet"
    table = pa.table(
        {
            "contact_id": ["c1", "c2", "c3"],
            "org_id": ["o1", "o1", "o2"],
            "position": ["ceo", "cto", "buyer"],
            "interests": pa.array([["Speed", " scale"], [], None], pa.list_(pa.string())),
        }
    )
    pq.write_table(table, path)
    contacts = data.read_table(path, "contacts")
    assert contacts["interests"].tolist() == ["Speed; scale", "", ""]


def test_parquet_list_column_validates_like_the_csv_text(tmp_path, tiny_dictionaries):
    frames = crm_frames(tiny_dictionaries)
    frames["contacts"].loc[0, "interests"] = " Speed ;save_money;speed"
    pq.write_table(pa.Table.from_pandas(frames["contacts"], preserve_index=False), tmp_path / "contacts.parquet")
    lists = frames["contacts"].copy()
    lists["interests"] = lists["interests"].str.split(";")
    pq.write_table(pa.Table.from_pandas(lists, preserve_index=False), tmp_path / "lists.parquet")
    as_text = data.read_table(tmp_path / "contacts.parquet", "contacts")
    as_list = data.read_table(tmp_path / "lists.parquet", "contacts")
    read = {"organizations": frames["organizations"], "outcomes": frames["outcomes"]}
    a = schema.validate({**read, "contacts": as_text}, tiny_dictionaries)[0].contacts
    b = schema.validate({**read, "contacts": as_list}, tiny_dictionaries)[0].contacts
    pd.testing.assert_frame_equal(a, b)
    assert b.loc[0, "interests"] == "save_money;speed"


def test_parquet_list_with_null_element_keeps_the_others(tmp_path):
    path = tmp_path / "contacts.parquet"
    pq.write_table(
        pa.table(
            {"contact_id": ["c1"], "org_id": ["o1"], "position": ["ceo"], "interests": [["speed", None, "scale"]]}
        ),
        path,
    )
    assert data.read_table(path, "contacts")["interests"].tolist() == ["speed;scale"]


def test_csv_with_bom_and_odd_header_case(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_bytes("\ufeff Contact_ID ,STAGE,Request_Id,Full_Name\nc1,demo,r1,Иван\n".encode())
    requests = data.read_requests(path)
    assert list(requests.columns) == ["contact_id", "stage", "request_id"]
    assert requests.iloc[0].tolist() == ["c1", "demo", "r1"]
    assert requests.attrs["personal_columns_dropped"] == ["full_name"]


def test_quoted_field_with_newline_and_comma(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text('contact_id,stage\n"c,1","de\nmo"\n', encoding="utf-8")
    assert data.read_requests(path).iloc[0].tolist() == ["c,1", "de\nmo"]


def test_read_requests_requires_its_columns(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text("contact_id,request_id\nc1,r1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"requests.csv: missing required column\(s\) 'stage'"):
        data.read_requests(path)


def test_neither_csv_nor_parquet(tmp_path, tiny_dictionaries):
    write_crm(tmp_path, tiny_dictionaries, missing_file="outcomes")
    with pytest.raises(DataError, match=r"missing file outcomes.csv \(or outcomes.parquet\)"):
        data.read_crm(tmp_path)


def test_both_csv_and_parquet(tmp_path, tiny_dictionaries):
    write_crm(tmp_path, tiny_dictionaries, both_formats="organizations")
    with pytest.raises(DataError, match=r"both organizations\.csv and organizations\.parquet"):
        data.read_crm(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.read_crm(tmp_path / "nope")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "requests.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"requests.xlsx: unsupported file type '.xlsx'"):
        data.read_requests(path)


def test_empty_file_has_no_header(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"requests\.csv: empty file, no header row"):
        data.read_requests(path)


def test_ragged_row_names_row_numbers_never_its_content(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text("contact_id,stage\nc1,demo\nc2,demo,ivan@example.ru\nc3,lead\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        data.read_requests(path)
    message = str(caught.value)
    assert "requests.csv" in message and "row 2 has 3" in message and "the header has 2" in message
    assert "example.ru" not in message


def test_not_utf8(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_bytes("contact_id,stage\nc1,демо\n".encode("cp1251"))
    with pytest.raises(DataError, match=r"requests.csv: not UTF-8 text \(bad byte on line 2\)"):
        data.read_requests(path)


def test_a_name_that_is_not_utf8_hides_no_contact_from_the_pages(tmp_path, tiny_dictionaries):
    """c1's full_name in cp1251 (contract columns are fine, so validation passes): search and the
    card's names failed for every contact with 'not UTF-8 text'; now that byte shows as U+FFFD."""
    import crm

    directory = write_crm(tmp_path / "crm", tiny_dictionaries)
    path = directory / "contacts.csv"
    path.write_bytes(path.read_bytes().replace("Иван Петров 0".encode(), "Петров".encode("cp1251"), 1))
    schema.validate(data.read_crm(directory), tiny_dictionaries)  # the model's columns are all valid
    with crm.open_source(str(directory)) as source:
        assert source.display("c1")["contact"] == "\ufffd" * 6
        assert source.display("c2")["contact"] == "Иван Петров 1"
        assert "c2" in [row["contact_id"] for row in source.search("Иван Петров 1")]
    with pytest.raises(DataError, match="not UTF-8"):  # what the model reads keeps the strict rule
        data.read_table(path, schema.DISPLAY_TABLES["contacts"])


def test_header_with_a_column_twice(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text("contact_id,stage,Stage\nc1,demo,lead\n", encoding="utf-8")
    with pytest.raises(DataError, match="column 'stage' appears more than once"):
        data.read_requests(path)


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "requests.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"requests\.parquet: not a readable Parquet file"):
        data.read_requests(path)


def test_parquet_numbers_and_timestamps_become_csv_like_text(tmp_path):
    path = tmp_path / "organizations.parquet"
    pq.write_table(
        pa.table(
            {
                "org_id": pa.array([1, 2], pa.int64()),
                "industry": pa.array(["it", "it"]).dictionary_encode(),
                "employees": pa.array([120.0, None]),
                "client_since": pa.array([pd.Timestamp("2021-03-04"), None], pa.timestamp("ms")),
            }
        ),
        path,
    )
    orgs = data.read_table(path, schema.ORGANIZATIONS)
    assert orgs["org_id"].tolist() == ["1", "2"]
    assert orgs["industry"].tolist() == ["it", "it"]
    assert orgs["employees"].tolist() == ["120", ""]
    assert orgs["client_since"].iloc[0].startswith("2021-03-04") and orgs["client_since"].iloc[1] == ""


def test_a_semicolon_separated_export_is_named_as_such(tmp_path):
    """Excel's CSV in a Russian locale: the error said 'missing required column(s) …; found: no columns'."""
    path = tmp_path / "requests.csv"
    path.write_text("contact_id;stage\nc1;lead\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        data.read_requests(path)
    message = str(caught.value)
    assert "requests.csv: none of the requests columns in its header (found 'contact_id;stage')" in message
    assert "looks semicolon-separated: save it as comma-separated CSV (UTF-8)" in message
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"\(found 'a', 'b'\); required: contact_id, stage$"):
        data.read_requests(path)


def test_a_file_without_its_header_never_echoes_its_first_row(tmp_path):
    """An export without a header put a contact's full name and email into the error line."""
    path = tmp_path / "contacts.csv"
    path.write_text("C-0001,ORG-0001,Петрова Екатерина Алексеевна,katya@example.ru,+7 900 123-45-67,cfo\n"
                    "C-0002,ORG-0001,Иванов Иван,ivan@example.ru,+7 900 000-00-00,ceo\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        data.read_table(path, schema.CONTACTS)
    message = str(caught.value)
    for value in ("Петрова", "katya@example.ru", "+7 900", "C-0001", "ORG-0001"):
        assert value not in message
    assert "5 cell(s) that are not column names, not shown: the first row looks like data, not a header" in message
    assert "'cfo'" in message  # an identifier-like cell may be named: it is no one's name


def test_old_mac_line_endings_are_read_and_a_stray_cr_is_named(tmp_path):
    """CR-only line endings, or one CR inside an unquoted value, crashed with the csv module's traceback."""
    path = tmp_path / "organizations.csv"
    path.write_bytes(b"org_id,industry,employees\r1,it,120\r2,it,\r")
    orgs = data.read_table(path, schema.ORGANIZATIONS)
    assert orgs["org_id"].tolist() == ["1", "2"] and orgs["employees"].tolist() == ["120", ""]
    path.write_bytes(b"org_id,industry,employees\n1,it,120\n2,\rit,5\n")
    with pytest.raises(DataError, match=r"^organizations.csv: rows with a wrong number of fields \(row 2 has 2; "
                                        r"row 3 has 2, the header has 3\)"):
        data.read_table(path, schema.ORGANIZATIONS)


def test_lines_of_spaces_after_the_data_are_skipped_and_the_last_row_is_kept_whole(tmp_path):
    """A whitespace-only last line (an editor's leftover) was 'row 3 has 1' for a file with nothing wrong."""
    path = tmp_path / "organizations.csv"
    for ending in (b"\n", b"\r\n", b"\r"):
        path.write_bytes(ending.join([b"org_id,industry,employees", b"1,it,120", b"2,it, 5 ", b"   ", b"\t", b""]))
        orgs = data.read_table(path, schema.ORGANIZATIONS)
        assert orgs["org_id"].tolist() == ["1", "2"] and orgs["employees"].tolist() == ["120", " 5 "]
    path.write_bytes(b"org_id,industry,employees\n1,it,120\n   \n2,it,5\n")  # among the data: still an error
    with pytest.raises(DataError, match=r"row 2 has 1, the header has 3"):
        data.read_table(path, schema.ORGANIZATIONS)
    path.write_bytes(b"org_id,industry,employees\n1,it\n   \n")  # a real error before the blank tail is named
    with pytest.raises(DataError, match=r"row 1 has 2, the header has 3"):
        data.read_table(path, schema.ORGANIZATIONS)


def test_a_bom_csv_whose_header_buffer_ends_inside_a_character_is_read(tmp_path):
    """With a BOM, the header's 64 KiB look-ahead cut a two-byte character 3 bytes too early when it ended
    inside one, and every command died with a UnicodeDecodeError traceback (a CRLF copy of the sample)."""
    path = tmp_path / "organizations.csv"
    rows = [f"{i},отрасль-{'ж' * 40},{i}" for i in range(1200)]  # Cyrillic: two bytes a character
    for pad in range(4):  # every alignment of the buffer's end against the characters
        text = "org_id,industry,employees" + " " * pad + "\r\n" + "\r\n".join(rows) + "\r\n"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        orgs = data.read_table(path, schema.ORGANIZATIONS)
        assert len(orgs) == 1200 and orgs["industry"].iloc[-1] == "отрасль-" + "ж" * 40


def test_parquet_columns_arrow_cannot_make_text_of_are_named_not_a_traceback(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "contacts.parquet"
    base = {"contact_id": ["c1", "c2"], "org_id": ["o1", "o1"], "position": ["ceo", "cfo"]}
    for department, message in (
        (pa.array([{"code": "it"}, {"code": "hr"}]), r"column 'department': type struct<code: string> is not allowed"),
        (pa.array([[["a"]], [["b"]]]),
         r"column 'department': type list<element: list<element: string>> is not allowed"),
        (pa.array([b"\xc0\xff", b"ok"], pa.binary()), r"column 'department': not UTF-8 text"),
    ):
        pq.write_table(pa.table({**base, "department": department}), path)
        with pytest.raises(DataError, match=rf"^contacts.parquet {message}"):
            data.read_table(path, schema.CONTACTS)
    pq.write_table(pa.table(base), path)
    raw = bytearray(path.read_bytes())
    raw[40:200] = bytes(160)  # the footer still reads; a data page does not
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"^contacts.parquet: not a readable Parquet file"):
        data.read_table(path, schema.CONTACTS)

    orgs = tmp_path / "organizations.parquet"  # NaN: how pandas, Polars and Spark store a missing number
    pq.write_table(pa.table({"org_id": ["o1", "o2"], "industry": ["it", "it"],
                             "revenue_mln": pa.array([1.5, np.nan])}), orgs)
    assert data.read_table(orgs, schema.ORGANIZATIONS)["revenue_mln"].tolist() == ["1.5", ""]
