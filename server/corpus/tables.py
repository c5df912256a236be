"""The corpus's rows: texts (and ids) read from JSONL, CSV or Parquet, a chunk at a time, never the whole file."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

InputFormat = Literal["jsonl", "csv", "parquet"]
SUFFIXES: dict[str, InputFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class CorpusError(ValueError):
    """The input cannot be read as asked (a missing column, a row without text, an unknown format)."""


@dataclass(frozen=True, slots=True)
class Corpus:
    path: Path
    format: InputFormat
    text_column: str
    id_column: str | None = None
    """None: a row's id is its number, from 0."""

    @classmethod
    def open(cls, path: Path, *, text_column: str, id_column: str | None, format: str | None = None) -> Corpus:
        if not path.is_file():
            raise CorpusError(f"{path}: no such file")
        chosen = format or SUFFIXES.get(path.suffix.lower())
        if chosen not in ("jsonl", "csv", "parquet"):
            raise CorpusError(f"{path}: say --input-format jsonl, csv or parquet (its suffix says none)")
        return cls(path, chosen, text_column, id_column)

    def count(self) -> int:
        """How many rows: Parquet's metadata says; JSONL has one a non-blank line (read, not parsed: `chunks` parses
        each line once); CSV is counted by its records (a quoted field may span lines)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(self.path).metadata.num_rows)
        if self.format == "jsonl":
            with self.path.open(encoding="utf-8") as f:  # blank as `_records` reads blank: the same str.strip
                return sum(1 for line in f if line.strip())
        return sum(1 for _ in self._records())

    def chunks(self, size: int, *, skip: int = 0) -> Iterator[tuple[list[Any], list[str]]]:
        """(ids, texts) of `size` rows at a time (the last chunk shorter), after the first `skip` rows."""
        ids: list[Any] = []
        texts: list[str] = []
        for number, record in enumerate(self._records()):
            if number < skip:
                continue
            ids.append(self._id(record, number))
            texts.append(self._text(record, number))
            if len(texts) == size:
                yield ids, texts
                ids, texts = [], []
        if texts:
            yield ids, texts

    def _records(self) -> Iterator[dict[str, Any]]:
        if self.format == "jsonl":
            with self.path.open(encoding="utf-8") as f:
                for line_number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as exc:
                        raise CorpusError(f"{self.path}:{line_number}: not JSON: {exc}") from None
                    if not isinstance(record, dict):
                        raise CorpusError(f"{self.path}:{line_number}: a line must be a JSON object")
                    yield record
        elif self.format == "csv":
            with self.path.open(encoding="utf-8", newline="") as f:
                yield from csv.DictReader(f)
        else:
            import pyarrow.parquet as pq

            columns = [self.text_column, *([self.id_column] if self.id_column else [])]
            parquet = pq.ParquetFile(self.path)
            missing = [c for c in columns if c not in parquet.schema_arrow.names]
            if missing:
                raise CorpusError(
                    f"{self.path}: no column {missing[0]!r} (it has {', '.join(parquet.schema_arrow.names)})"
                )
            for batch in parquet.iter_batches(batch_size=4096, columns=columns):
                yield from batch.to_pylist()

    def _text(self, record: dict[str, Any], number: int) -> str:
        text = record.get(self.text_column)
        if not isinstance(text, str) or not text:
            what = "no" if self.text_column not in record else "an empty or non-text"
            raise CorpusError(f"{self.path}: row {number} has {what} {self.text_column!r} (name it with --text-column)")
        return text

    def _id(self, record: dict[str, Any], number: int) -> Any:
        if self.id_column is None:
            return number
        if record.get(self.id_column) is None:
            raise CorpusError(f"{self.path}: row {number} has no {self.id_column!r}")
        return record[self.id_column]
