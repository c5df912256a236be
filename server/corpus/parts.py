"""The output, written as it is computed and resumable: OUTPUT.parts/ holds one file per part of the corpus (its
rows in order), each made whole or not at all (a temp file renamed), and a manifest saying what the parts are of.
A rerun on the same input and settings continues at the first missing part; at the end the parts become OUTPUT
(.npy: float32 rows in input order; .parquet: columns `id` and `vector`) and the folder goes."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

OutputFormat = Literal["npy", "parquet"]
MANIFEST = "manifest.json"


class ResumeMismatch(ValueError):
    """OUTPUT.parts/ holds parts of another input or other settings."""


@dataclass(frozen=True, slots=True)
class Job:
    """What the parts are of: a rerun continues only the same job."""

    input: str
    input_bytes: int
    input_mtime_ns: int
    rows: int
    part_rows: int
    model: str
    options: dict[str, Any]


def output_format(path: Path) -> OutputFormat:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix == ".parquet":
        return "parquet"
    raise ValueError(f"{path}: the output must end in .npy or .parquet")


class Parts:
    def __init__(self, out: Path, job: Job) -> None:
        self.out = out
        self.format = output_format(out)
        self.folder = out.with_name(out.name + ".parts")
        self.job = job

    def open(self) -> int:
        """Makes or checks the folder; the number of parts already made (a rerun skips them)."""
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            recorded = json.loads(manifest.read_text())
            if recorded != asdict(self.job):
                raise ResumeMismatch(
                    f"{self.folder} holds parts of another run ({recorded.get('input')}, model {recorded.get('model')}, "
                    "or other options): delete it to start again"
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(manifest, json.dumps(asdict(self.job), indent=2).encode())
        done = 0
        while self._path(done).is_file():
            done += 1
        return done

    def _path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.{self.format}"

    def write(self, index: int, ids: list[Any], vectors: np.ndarray) -> None:
        path = self._path(index)
        temporary = path.with_name(path.name + ".tmp")
        if self.format == "npy":
            with temporary.open("wb") as f:
                np.save(f, np.ascontiguousarray(vectors, dtype=np.float32))
                f.flush()
                os.fsync(f.fileno())
        else:
            import pyarrow.parquet as pq

            pq.write_table(vector_table(ids, vectors), temporary)
        os.replace(temporary, path)

    def assemble(self, count: int) -> None:
        """The parts as OUTPUT, written beside it and renamed into place; then the parts go."""
        temporary = self.out.with_name(self.out.name + ".tmp")
        if self.format == "npy":
            first = np.load(self._path(0), mmap_mode="r") if count else np.zeros((0, 0), np.float32)
            out = np.lib.format.open_memmap(
                temporary, mode="w+", dtype=np.float32, shape=(self.job.rows, first.shape[1])
            )
            row = 0
            for index in range(count):
                part = np.load(self._path(index), mmap_mode="r")
                out[row : row + len(part)] = part
                row += len(part)
            out.flush()
            del out
        else:
            import pyarrow.parquet as pq

            with pq.ParquetWriter(temporary, pq.read_schema(self._path(0))) as writer:
                for index in range(count):
                    writer.write_table(pq.read_table(self._path(index)))
        os.replace(temporary, self.out)
        shutil.rmtree(self.folder)


def vector_table(ids: list[Any], vectors: np.ndarray) -> Any:
    """The Parquet output's one shape (here and deploy/ray's job): `id`, and `vector` as fixed-size float32 lists."""
    import pyarrow as pa

    width = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table({"id": pa.array(ids), "vector": pa.FixedSizeListArray.from_arrays(flat, width)})


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
