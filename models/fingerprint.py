"""A model folder's identity by content: what a response cache keys on, so a changed folder (new
weights, another tokenizer, an edited config) never serves vectors computed from the old one."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def folder_fingerprint(folder: str | Path) -> str | None:
    """A digest of every file in `folder` (names and bytes; hidden files and caches left out), or None
    when `folder` is not a local folder (a hub id: its files are the hub library's to find)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
