"""The log handler: JSON lines written in bunches (one write per interval, not per request), with nothing
held back that matters: warnings at once, and every line by the time logging shuts down. The access line: rendered
straight to that handler when nothing else would see it, else a record like any other line."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from unittest import mock

import pytest

from embedserve.server.telemetry.logs import AccessLog, BufferedHandler, JsonFormatter, request_id


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


# -- the access line -------------------------------------------------------------------------


ACCESS_FIELDS = {"method": "POST", "path": "/v1/embeddings", "status": 200, "ms": 1.25, "model": "m", "caller": None}


@pytest.fixture
def access_chain() -> Iterator[tuple[logging.Logger, logging.Logger, io.StringIO, BufferedHandler]]:
    """An access logger under a top logger that holds our JSON handler, as configure_logging sets up the root's.
    Neither is registered with logging: pytest's capture handlers join every registered logger that does not
    propagate, and would take the line as a record."""
    top = logging.Logger("test-top", logging.INFO)
    logger = logging.Logger("test-top.access")
    logger.parent = top
    stream = io.StringIO()
    handler = BufferedHandler(stream, flush_seconds=3600)
    handler.setFormatter(JsonFormatter())
    top.addHandler(handler)
    yield top, logger, stream, handler
    handler.close()


def test_an_access_line_written_directly_is_the_line_logging_writes(access_chain) -> None:
    _, logger, stream, handler = access_chain
    token = request_id.set("rid-1")
    try:
        with mock.patch.object(logger, "makeRecord", side_effect=AssertionError("no LogRecord on the direct way")):
            AccessLog(logger).write(dict(ACCESS_FIELDS))
        logger.info("request", extra=dict(ACCESS_FIELDS))  # the same line the long way
    finally:
        request_id.reset(token)
    assert stream.getvalue() == ""  # held like any info line
    handler.flush()
    direct, through_logging = lines(stream)
    assert direct.pop("ts")[:-5] == through_logging.pop("ts")[:-5]  # the same second (the test is not that slow)
    assert list(direct.items()) == list(through_logging.items())
    assert direct == {"level": "info", "logger": logger.name, "msg": "request", "request_id": "rid-1", **ACCESS_FIELDS}


class Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("change", ["another handler", "a text formatter", "a logger filter", "a handler filter"])
def test_any_other_logging_set_up_gets_the_access_line_as_a_record(access_chain, change: str) -> None:
    _, logger, stream, handler = access_chain
    recording = Recording()
    if change == "another handler":
        logger.addHandler(recording)  # a test's capture, an operator's file
    elif change == "a text formatter":
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(status)s"))
    elif change == "a logger filter":
        logger.addFilter(lambda record: record.__dict__.setdefault("tag", "filtered") is not None)
    else:
        handler.addFilter(lambda record: record.__dict__.setdefault("tag", "filtered") is not None)
    AccessLog(logger).write(dict(ACCESS_FIELDS))
    handler.flush()
    if change == "another handler":
        assert [record.getMessage() for record in recording.records] == ["request"]
        assert recording.records[0].status == 200  # type: ignore[attr-defined]
        assert lines(stream)[0]["status"] == 200
    elif change == "a text formatter":
        assert stream.getvalue() == f"INFO {logger.name} request 200\n"
    else:
        assert lines(stream)[0]["tag"] == "filtered"  # the filter saw a record


def test_no_access_line_below_its_level(access_chain) -> None:
    top, logger, stream, handler = access_chain
    top.setLevel(logging.WARNING)
    AccessLog(logger).write(dict(ACCESS_FIELDS))
    handler.flush()
    assert stream.getvalue() == ""
