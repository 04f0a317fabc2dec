"""Whole-table SQLite reads as an Arrow IPC stream, in a process of its own (used by `crm.sql`).

    python -m crm.sqlite_reader PATH QUERY      # writes the query's rows to stdout as Arrow IPC

ADBC's SQLite driver reads straight into Arrow (C, no Python object per value): several times
faster than Python's sqlite3 module. But it links its own copy of SQLite, and two SQLite libraries
in one process release each other's POSIX file locks (SQLite's documented "multiple copies"
hazard), while the service writes feedback through Python's sqlite3. So the read runs here, in a
child process that only reads, and the parent consumes the stream batch by batch. The database is
opened read-only. On an error the child prints one line on stderr and exits 1 (bad query or
table) or 3 (the file cannot be opened or read).
"""

from __future__ import annotations

import sys

EXIT_DATA, EXIT_UNAVAILABLE = 1, 3


def main(argv: list[str]) -> int:
    path, query = argv
    from urllib.parse import quote

    import adbc_driver_manager.dbapi as adbc
    import adbc_driver_sqlite.dbapi as sqlite_adbc
    import pyarrow as pa

    try:
        with sqlite_adbc.connect(f"file:{quote(path)}?mode=ro") as conn, conn.cursor() as cursor:
            cursor.execute(query)
            reader = cursor.fetch_record_batch()
            with pa.ipc.new_stream(sys.stdout.buffer, reader.schema) as sink:
                for batch in reader:
                    sink.write_batch(batch)
    except adbc.OperationalError as exc:
        print(_first_line(exc), file=sys.stderr)
        return EXIT_UNAVAILABLE
    except adbc.Error as exc:
        print(_first_line(exc), file=sys.stderr)
        return EXIT_DATA
    return 0


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
