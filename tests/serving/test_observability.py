"""`serving.observability`: the JSON log line's shape."""

from __future__ import annotations

import json
import logging

from serving.observability import JsonFormatter


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
    assert lines[0] == {"ts": lines[0]["ts"], "level": "info", "logger": "needs_rec.serving", "event": "request",
                        "status": 200}  # fmt: skip
