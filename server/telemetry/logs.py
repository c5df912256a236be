"""JSON logs, each line carrying the request id of the request it belongs to."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from typing import TextIO

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


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
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._chars += len(line)
        if record.levelno >= logging.WARNING or self._chars >= self.max_chars:
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
