"""A streaming reader of multipart/form-data (RFC 7578) bodies, for file uploads.

Uploads can be hundreds of megabytes, so the file part must go to disk as it arrives, never whole into memory;
and the project does not depend on python-multipart (what FastAPI's `UploadFile` needs). This reads the body's
chunks and yields each part's headers, then its data in pieces, bounded by nothing but the caller.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

MAX_HEAD_BYTES = 16 * 1024
"""A part's headers: more is not a form a client sends."""


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes


_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,200})"|([^\s;]{1,200}))', re.IGNORECASE)
_NAME = re.compile(r'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r'(?:^|;)\s*filename="([^"]*)"', re.IGNORECASE)


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data content type; MultipartError for any other type."""
    if not content_type or content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise MultipartError("the body must be multipart/form-data")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise MultipartError("the multipart/form-data content type names no boundary")
    return (found[1] or found[2]).encode("latin-1")


def _part(head: bytes) -> Part:
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            field = _NAME.search(value)
            if field is None:
                break
            filename = _FILENAME.search(value)
            return Part(field[1], filename[1] if filename else None)
    raise MultipartError("a part of the form has no Content-Disposition name")


async def parts(chunks: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[Part | Data]:
    """Each part of the body: its `Part`, then its content as `Data` pieces. MultipartError if it is malformed."""
    opening = b"--" + boundary
    delimiter = b"\r\n--" + boundary
    buffer = b""
    state = "preamble"
    async for chunk in chunks:
        buffer += chunk
        while True:
            if state == "preamble":
                at = buffer.find(opening)
                if at < 0:
                    buffer = buffer[-len(opening) :]
                    break
                buffer = buffer[at + len(opening) :]
                state = "after_delimiter"
            if state == "after_delimiter":
                if len(buffer) < 2:
                    break
                if buffer.startswith(b"--"):
                    return  # the closing delimiter: what follows is an epilogue
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise MultipartError("malformed multipart body: no line break after a boundary")
                    break
                if buffer[:end].strip(b" \t"):
                    raise MultipartError("malformed multipart body: text after a boundary")
                buffer = buffer[end + 2 :]
                state = "head"
            if state == "head":
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise MultipartError("a part's headers are too long")
                    break
                yield _part(buffer[:end])
                buffer = buffer[end + 4 :]
                state = "body"
            if state == "body":
                at = buffer.find(delimiter)
                if at < 0:
                    keep = len(delimiter) - 1  # the delimiter may begin at the chunk's end
                    if len(buffer) > keep:
                        yield Data(buffer[:-keep])
                        buffer = buffer[-keep:]
                    break
                if at:
                    yield Data(buffer[:at])
                buffer = buffer[at + len(delimiter) :]
                state = "after_delimiter"
    raise MultipartError("the multipart body ended before its closing boundary")
