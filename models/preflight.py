"""What can be known about a model before loading it: whether its folder exists and whether the
packages its backend runs on are installed. Checked at start-up so a mistake fails in one line within a
second, instead of after torch's import, or never (a server that answers 503 for ever)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from embedserve.models.backend import backend_entry
from embedserve.models.sources import guess_backend, resolve_source
from embedserve.models.spec import AUTO_BACKEND, ModelSpec

# Packages a missing module is installed with, where the two names differ.
_DISTRIBUTIONS = {"sentence_transformers": "sentence-transformers"}


def looks_like_path(source: str) -> bool:
    """A source written as a path (absolute, ./ ../ ~, or with more than one '/'), not as a hub id
    (`name` or `org/name`), which only the hub can check."""
    return source.startswith(("/", "./", "../", "~", ".\\")) or source.count("/") > 1 or "\\" in source


def missing_modules(backend: str) -> list[str]:
    return missing(backend_entry(backend).packages)


def missing(modules: tuple[str, ...]) -> list[str]:
    """Those of `modules` that cannot be imported here, by their distributions' names."""
    return [_DISTRIBUTIONS.get(name, name) for name in modules if not _importable(name)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook that refuses it, or a broken install
        return False


def problems(spec: ModelSpec) -> list[str]:
    """Why `spec` cannot load, as far as can be told without loading it (empty: nothing found)."""
    found = []
    # auto serves an exported folder by its graphs' backend; anything else needs torch (to export, or to serve).
    backend = spec.backend
    if backend == AUTO_BACKEND:
        backend = guess_backend(spec.source)
        backend = "torch" if backend == AUTO_BACKEND else backend
    if absent := missing_modules(backend):
        names = ", ".join(absent)
        entry = backend_entry(backend)
        found.append(
            f"model {spec.id!r} runs on {backend}, but {names} is not installed: "
            f"pip install 'embedserve[{entry.extra}]'{entry.hint}"
        )
    if looks_like_path(spec.source):
        folder = Path(resolve_source(spec.source)).expanduser()
        if not folder.is_dir():
            what = "is a file, not a model folder" if folder.exists() else "does not exist"
            found.append(f"model {spec.id!r}: {spec.source} {what}")
    return found
