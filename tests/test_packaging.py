"""What `pip install` puts in site-packages: the repository's top-level folders (server/, batching/,
models/, quantize/) under one namespace, `embedserve.*`, and nothing top-level named `server` or
`models` (names half of PyPI also uses)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.support import ROOT

FOLDERS = ("server", "batching", "models", "quantize")


def _declared() -> tuple[dict[str, str], list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["package-dir"], config["packages"]


def test_every_package_of_the_four_folders_is_installed_under_embedserve() -> None:
    mapping, packages = _declared()
    assert mapping == {f"embedserve.{folder}": folder for folder in FOLDERS}
    found = sorted(
        "embedserve." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    )
    assert sorted(packages) == found, "a package folder is missing from pyproject.toml's [tool.setuptools] packages"


def test_outside_the_repository_every_module_imports_by_its_namespaced_name_and_no_bare_name_does(
    tmp_path: Path,
) -> None:
    script = """
import importlib, pkgutil, sys
import embedserve.server
for bare in ("server", "models", "batching", "quantize"):
    try:
        importlib.import_module(bare)
    except ImportError:
        continue
    sys.exit(f"import {bare} works outside the repository")
failed = []
for name in ("embedserve.server", "embedserve.batching", "embedserve.models", "embedserve.quantize"):
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except Exception as exc:
            failed.append(f"{module.name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_the_wheel_holds_only_the_embedserve_namespace(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    result = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("embedserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"embedserve", next(t for t in tops if t.endswith(".dist-info"))}, sorted(tops)
    assert "embedserve/server/cli.py" in names and "embedserve/models/backend.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "embedserve = embedserve.server.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
