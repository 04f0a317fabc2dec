"""`serving.observability`: the JSON log line's shape."""

from __future__ import annotations

import io
import json
import logging
import os

from serving.observability import JsonFormatter, write_request_line


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("needs_rec.serving", logging.INFO, __file__, 1, "request", (), None)
    record.created, record.msecs = created, (created % 1) * 1000
    record.fields = {"status": 200}
    return record


def test_each_line_carries_its_own_time_to_the_millisecond() -> None:
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(_record(t))) for t in (1796191410.0725, 1796191410.9991, 1796191411.0004)]
    assert [line["ts"] for line in lines] == [
        "2026-12-02T06:03:30.072Z", "2026-12-02T06:03:30.999Z", "2026-12-02T06:03:31.000Z",
    ]  # fmt: skip
    assert lines[0] == {"ts": lines[0]["ts"], "level": "info", "logger": "needs_rec.serving", "pid": os.getpid(),
                        "event": "request", "status": 200}  # fmt: skip


def _json_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_the_request_line_written_directly_is_the_line_logging_writes() -> None:
    logger, stream = _json_logger("needs_rec.test.direct")
    fields = {"method": "POST", "endpoint": "recommendations", "status": 200, "latency_ms": 0.41, "model_version": 3}
    write_request_line(logger, fields)
    logger.info("request", extra={"fields": fields})
    direct, through_logging = (json.loads(line) for line in stream.getvalue().splitlines())
    assert direct.pop("ts")[:-5] <= through_logging.pop("ts")[:-5]  # same second or the next
    assert direct == through_logging == {"level": "info", "logger": "needs_rec.test.direct", "pid": os.getpid(),
                                         "event": "request", **fields}  # fmt: skip


def test_a_logger_set_up_otherwise_gets_the_request_line_through_logging() -> None:
    logger, stream = _json_logger("needs_rec.test.filtered")
    logger.handlers[0].addFilter(lambda record: record.getMessage() != "request")  # a filter must still apply
    write_request_line(logger, {"status": 200})
    assert stream.getvalue() == ""
    logger, stream = _json_logger("needs_rec.test.two")
    second = io.StringIO()
    logger.addHandler(logging.StreamHandler(second))  # a second handler (plain text) gets its line too
    write_request_line(logger, {"status": 201})
    assert json.loads(stream.getvalue())["status"] == 201 and second.getvalue() == "request\n"
