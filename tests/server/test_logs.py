"""The log handler: JSON lines written in bunches (one write per interval, not per request), with nothing
held back that matters: warnings at once, and every line by the time logging shuts down."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from embedserve.server.telemetry.logs import BufferedHandler, JsonFormatter, request_id


class CountingStream(io.StringIO):
    """A stream that counts its write calls."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream, BufferedHandler]]:
    stream = CountingStream()
    handler = BufferedHandler(stream, flush_seconds=3600, max_chars=4096)  # only what the test causes
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test-logs-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    handler.close()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_info_lines_wait_for_the_flush_and_then_go_out_in_one_write(logged) -> None:
    logger, stream, handler = logged
    token = request_id.set("abc")
    try:
        for i in range(5):
            logger.info("request", extra={"status": 200, "n": i})
    finally:
        request_id.reset(token)
    assert stream.getvalue() == ""
    handler.flush()
    assert stream.writes == 1
    assert [(entry["msg"], entry["n"], entry["request_id"]) for entry in lines(stream)] == [
        ("request", i, "abc") for i in range(5)
    ]


def test_a_warning_goes_out_at_once_with_what_was_waiting(logged) -> None:
    logger, stream, _ = logged
    logger.info("first")
    logger.warning("trouble")
    assert [entry["msg"] for entry in lines(stream)] == ["first", "trouble"]


def test_a_full_buffer_goes_out_without_waiting(logged) -> None:
    logger, stream, _ = logged
    for i in range(100):  # well past 4096 characters
        logger.info("line %d", i)
    written = lines(stream)
    assert len(written) >= 30 and [entry["msg"] for entry in written] == [f"line {i}" for i in range(len(written))]


def test_closing_writes_every_line_left() -> None:
    stream = CountingStream()
    handler = BufferedHandler(stream, flush_seconds=3600)
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "bye", None, None)
    handler.handle(record)
    handler.close()
    assert [entry["msg"] for entry in lines(stream)] == ["bye"]


def test_lines_go_out_by_themselves_after_the_interval() -> None:
    stream = CountingStream()
    handler = BufferedHandler(stream, flush_seconds=0.01)
    handler.setFormatter(JsonFormatter())
    try:
        handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "later", None, None))
        deadline = time.monotonic() + 30
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [entry["msg"] for entry in lines(stream)] == ["later"]
    finally:
        handler.close()
