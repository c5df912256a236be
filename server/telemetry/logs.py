"""JSON logs, each line carrying the request id of the request it belongs to."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


def json_line(created: float, level: str, logger: str, message: str, fields: Mapping[str, Any]) -> str:
    """One JSON log line (without its newline): the one home of the lines' shape, for JsonFormatter and AccessLog."""
    whole = int(created)
    entry = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z",
        "level": level,
        "logger": logger,
        "msg": message,
    }
    rid = request_id.get()
    if rid is not None:
        entry["request_id"] = rid
    entry.update(fields)
    return orjson.dumps(entry, default=str).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in record.__dict__.items() if key not in _STANDARD and key[0] != "_"}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


class BufferedHandler(logging.StreamHandler):
    """Lines go out together, at most `flush_seconds` after they were logged, as nginx's
    `access_log ... buffer= flush=` does: one write call per interval, not one per request (an access
    line written alone cost about a fifth of the event loop's time per short request). A warning or
    worse, or a full buffer, goes out at once; so does what is left when logging shuts down (at exit)."""

    def __init__(self, stream: TextIO, *, flush_seconds: float = 0.2, max_chars: int = 65536) -> None:
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self.max_chars = max_chars
        self._lines: list[str] = []
        self._chars = 0
        self._stopping = threading.Event()
        threading.Thread(target=self._flush_every_interval, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(line, record.levelno)

    def emit_line(self, line: str, level: int) -> None:
        """A line rendered already (AccessLog's), held and written as a record's would be."""
        with self.lock:  # type: ignore[union-attr]
            self._add(line, level)

    def _add(self, line: str, level: int) -> None:
        line += self.terminator
        self._lines.append(line)
        self._chars += len(line)
        if level >= logging.WARNING or self._chars >= self.max_chars:
            self._write()

    def _write(self) -> None:
        if self._lines:
            lines, self._lines, self._chars = self._lines, [], 0
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: the lines cannot be written anywhere
                pass

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()

    def _flush_every_interval(self) -> None:
        while not self._stopping.wait(self.flush_seconds):
            self.flush()


class AccessLog:
    """Each request's access line, at info level. Through logging's machinery (a LogRecord, the loggers, the
    formatter) a line cost the event loop ~22 µs a request under the server: 12% of cached `zipf` requests/s on the
    AMD EPYC of bench/README.md. Where the line would reach only the JSON BufferedHandler that configure_logging
    installs, with no filter on the way, it is rendered from its fields and handed to that handler: the same line,
    for half that cost. Any other set-up (text logs, an operator's or a test's handler, a filter) takes logging's
    way, as any other line does."""

    def __init__(self, logger: logging.Logger, message: str = "request") -> None:
        self.logger = logger
        self.message = message

    def write(self, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = self._sole_handler()
        if handler is None:
            logger.info(self.message, extra=fields)
        else:
            handler.emit_line(json_line(time.time(), "info", logger.name, self.message, fields), logging.INFO)

    def _sole_handler(self) -> BufferedHandler | None:
        """The one handler the line would reach, when it is ours, writes JSON and nothing filters the line."""
        found: BufferedHandler | None = None
        logger: logging.Logger | None = self.logger
        while logger is not None:
            if logger.filters:
                return None
            for handler in logger.handlers:
                ours = type(handler) is BufferedHandler and type(handler.formatter) is JsonFormatter
                if found is not None or not ours or handler.filters or handler.level > logging.INFO:
                    return None
                found = handler  # type: ignore[assignment]
            logger = logger.parent if logger.propagate else None
        return found


def configure_logging(level: str = "info", json: bool = True) -> None:
    handler = BufferedHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Libraries' chatter about loading is noise at info level.
    for name in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def flush_logs() -> None:
    """Writes what the handlers hold, before a last line printed outside logging (the CLI's exit reason)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
