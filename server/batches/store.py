"""The Batch API's durable state: uploaded and produced files on disk, and a SQLite database (standard
library, WAL) of what they are and of each job's progress.

Durability rests on one invariant: a job's recorded progress (the next input line and the byte lengths of its
output and error files) never runs ahead of what is on disk. The runner appends a group of finished lines to
the files and fsyncs them, and only then commits their progress (`Store.advance`); at restart the files are cut
back to the recorded lengths (`Store.resume_files`) and the job continues at the recorded line. A kill at any
point therefore loses no line and writes none twice. That needs no fsync of the database itself: a commit lost
with the machine only means the lines after it are done again, over bytes that are cut away first.

Uploads are written to a temporary file in the same folder, fsynced and renamed into place, so a file id
never names half a file.

Nothing is opened until it is needed: a server that never sees the Batch API creates no folder.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    in_progress_at INTEGER,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    expired_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    next_line INTEGER NOT NULL DEFAULT 0,
    input_offset INTEGER NOT NULL DEFAULT 0,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    error_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_by_owner ON batches (owner, seq);
"""

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
"""States of a job the runner still has to move on (a restart picks them up)."""


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    lines: int
    created_at: int
    path: str


@dataclass(frozen=True, slots=True)
class BatchRow:
    seq: int
    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    output_file_id: str | None
    error_file_id: str | None
    errors: str | None
    metadata: str | None
    total: int
    completed: int
    failed: int
    input_tokens: int
    next_line: int
    input_offset: int
    output_bytes: int
    error_bytes: int


@dataclass(frozen=True, slots=True)
class Progress:
    """What one group of finished lines moves a job on by."""

    next_line: int
    input_offset: int
    output_bytes: int
    error_bytes: int
    completed: int
    failed: int
    input_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def fsync_dir(folder: Path) -> None:
    """Makes a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Upload:
    """A file being uploaded: written to a temporary name, then `seal` fsyncs and renames it into place."""

    def __init__(self, store: Store, owner: str, purpose: str, filename: str) -> None:
        self.store = store
        self.owner = owner
        self.purpose = purpose
        self.filename = filename
        self.id = new_id("file-")
        self.path = store.files_dir / f"{self.id}.jsonl"
        self.temp = store.files_dir / f".upload-{self.id}"
        self._out = open(self.temp, "wb")  # noqa: SIM115  # closed by commit or discard
        self.bytes = 0
        self.lines = 0
        """Lines with content ended so far (blank lines are not requests: the runner skips them too)."""
        self._open_line = False  # the line being written has content

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes += len(data)
        for index, piece in enumerate(data.split(b"\n")):
            if index > 0:
                self.lines += self._open_line
                self._open_line = False
            self._open_line = self._open_line or bool(piece.strip())

    def seal(self) -> None:
        """fsync, then rename into place (in a thread: fsync of a large file takes a while). `Store.add_file`,
        on the event loop like every use of the database, then records it."""
        self.lines += self._open_line
        self._open_line = False
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self.temp, self.path)
        fsync_dir(self.store.files_dir)

    def discard(self) -> None:
        if not self._out.closed:
            self._out.close()
        self.temp.unlink(missing_ok=True)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.jobs_dir = self.root / "batches"
        self._db: sqlite3.Connection | None = None

    @property
    def exists(self) -> bool:
        return (self.root / "batches.db").is_file()

    @property
    def db(self) -> sqlite3.Connection:
        """The database, created (with its folders) on first use."""
        if self._db is None:
            for folder in (self.root, self.files_dir, self.jobs_dir):
                folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.root / "batches.db", isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # see the module's docstring: progress never outruns the files
            db.executescript(SCHEMA)
            for leftover in self.files_dir.glob(".upload-*"):  # uploads a kill cut short
                leftover.unlink(missing_ok=True)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- files ---------------------------------------------------------------------------

    def upload(self, owner: str, purpose: str, filename: str) -> Upload:
        self.db  # noqa: B018  # the folders exist
        return Upload(self, owner, purpose, filename)

    def add_file(self, owner: str, purpose: str, filename: str, path: Path, file_id: str, *, lines: int) -> FileRow:
        row = FileRow(file_id, owner, purpose, filename, path.stat().st_size, lines, int(time.time()), str(path))
        self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _values(row))
        return row

    def file(self, file_id: str, owner: str) -> FileRow | None:
        found = self.db.execute("SELECT * FROM files WHERE id = ? AND owner = ?", (file_id, owner)).fetchone()
        return FileRow(**dict(found)) if found else None

    def files(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[FileRow], bool]:
        """A page of the owner's files in upload order (or its reverse), after the file `after`; and whether more
        follow."""
        clauses, args = ["owner = ?"], [owner]
        if purpose is not None:
            clauses.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            anchor = self.db.execute("SELECT rowid FROM files WHERE id = ? AND owner = ?", (after, owner)).fetchone()
            if anchor is None:
                return [], False
            clauses.append("rowid < ?" if newest_first else "rowid > ?")
            args.append(anchor[0])
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(
            f"SELECT * FROM files WHERE {' AND '.join(clauses)} ORDER BY rowid {order} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return [FileRow(**dict(row)) for row in rows[:limit]], len(rows) > limit

    def delete_file(self, row: FileRow) -> None:
        self.db.execute("DELETE FROM files WHERE id = ?", (row.id,))
        Path(row.path).unlink(missing_ok=True)

    def active_batch_reading(self, file_id: str) -> str | None:
        """The id of a job not yet finished that reads this file, if any."""
        found = self.db.execute(
            f"SELECT id FROM batches WHERE input_file_id = ? AND status IN ({','.join('?' * len(ACTIVE))})",
            (file_id, *ACTIVE),
        ).fetchone()
        return found[0] if found else None

    # -- jobs ----------------------------------------------------------------------------

    def create_batch(
        self,
        owner: str,
        input_file: FileRow,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        *,
        window_seconds: int,
        failure: dict[str, Any] | None = None,
    ) -> BatchRow:
        """A new job: validating (the runner takes it from there), or failed at once with `failure`."""
        now = int(time.time())
        batch_id = new_id("batch_")
        status, failed_at, errors = "validating", None, None
        if failure is not None:
            status, failed_at, errors = "failed", now, json.dumps({"object": "list", "data": [failure]})
        self.db.execute(
            "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, status, created_at,"
            " expires_at, failed_at, errors, metadata, total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch_id,
                owner,
                endpoint,
                input_file.id,
                completion_window,
                status,
                now,
                now + window_seconds,
                failed_at,
                errors,
                json.dumps(metadata) if metadata is not None else None,
                input_file.lines,
            ),
        )
        found = self.batch(batch_id)
        assert found is not None
        return found

    def batch(self, batch_id: str, owner: str | None = None) -> BatchRow | None:
        if owner is None:
            found = self.db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        else:
            found = self.db.execute("SELECT * FROM batches WHERE id = ? AND owner = ?", (batch_id, owner)).fetchone()
        return BatchRow(**dict(found)) if found else None

    def batches(self, owner: str, *, after: str | None, limit: int) -> tuple[list[BatchRow], bool]:
        """A page of the owner's jobs, newest first (OpenAI's order), after the job `after`; and whether more follow."""
        query, args = "SELECT * FROM batches WHERE owner = ?", [owner]
        if after is not None:
            anchor = self.batch(after, owner)
            if anchor is None:
                return [], False
            query += " AND seq < ?"
            args.append(anchor.seq)
        rows = self.db.execute(query + " ORDER BY seq DESC LIMIT ?", (*args, limit + 1)).fetchall()
        return [BatchRow(**dict(row)) for row in rows[:limit]], len(rows) > limit

    def next_active(self) -> BatchRow | None:
        """The oldest job the runner still has to move on."""
        found = self.db.execute(
            f"SELECT * FROM batches WHERE status IN ({','.join('?' * len(ACTIVE))}) ORDER BY seq LIMIT 1", ACTIVE
        ).fetchone()
        return BatchRow(**dict(found)) if found else None

    def set_status(self, batch_id: str, status: str, **fields: Any) -> None:
        """Moves a job to `status`, stamping `<status>_at` (for the states that have one) and any other fields."""
        stamp = f"{status}_at"
        if stamp in BatchRow.__slots__ and stamp not in fields:  # type: ignore[attr-defined]
            fields[stamp] = int(time.time())
        assignments = ", ".join(["status = ?", *(f"{name} = ?" for name in fields)])
        self.db.execute(f"UPDATE batches SET {assignments} WHERE id = ?", (status, *fields.values(), batch_id))

    def request_cancel(self, batch_id: str) -> None:
        """cancelling, unless the job already ended (the runner finishes the move to cancelled)."""
        self.db.execute(
            "UPDATE batches SET status = 'cancelling', cancelling_at = ? WHERE id = ? AND status IN (?, ?)",
            (int(time.time()), batch_id, "validating", "in_progress"),
        )

    def advance(self, batch_id: str, progress: Progress) -> None:
        """Records a group of lines whose output is already fsynced (one transaction)."""
        self.db.execute(
            "UPDATE batches SET next_line = ?, input_offset = ?, output_bytes = ?, error_bytes = ?,"
            " completed = completed + ?, failed = failed + ?, input_tokens = input_tokens + ? WHERE id = ?",
            (
                progress.next_line,
                progress.input_offset,
                progress.output_bytes,
                progress.error_bytes,
                progress.completed,
                progress.failed,
                progress.input_tokens,
                batch_id,
            ),
        )

    # -- a job's output ------------------------------------------------------------------

    def job_paths(self, batch_id: str) -> tuple[Path, Path]:
        """Where a job's output and error lines are appended."""
        folder = self.jobs_dir / batch_id
        return folder / "output.jsonl", folder / "errors.jsonl"

    def resume_files(self, job: BatchRow) -> tuple[Path, Path]:
        """The job's output and error files, cut back to the lengths its recorded progress covers."""
        output, errors = self.job_paths(job.id)
        output.parent.mkdir(parents=True, exist_ok=True)
        for path, length in ((output, job.output_bytes), (errors, job.error_bytes)):
            with open(path, "ab") as handle:
                handle.truncate(length)
                handle.flush()
                os.fsync(handle.fileno())
        fsync_dir(output.parent)
        return output, errors

    def finish_files(self, job: BatchRow) -> tuple[str | None, str | None]:
        """Registers the job's non-empty output and error files as files of its owner (purpose batch_output). Each
        finished line is one line of one of them: their line counts are the job's completed and failed counts."""
        ids: list[str | None] = []
        for path, kind, lines in zip(
            self.job_paths(job.id), ("output", "errors"), (job.completed, job.failed), strict=True
        ):
            if lines == 0 or not path.is_file():
                ids.append(None)
                continue
            row = self.add_file(job.owner, "batch_output", f"{job.id}_{kind}.jsonl", path, new_id("file-"), lines=lines)
            ids.append(row.id)
        return ids[0], ids[1]


def _values(row: FileRow) -> tuple[Any, ...]:
    return (row.id, row.owner, row.purpose, row.filename, row.bytes, row.lines, row.created_at, row.path)
