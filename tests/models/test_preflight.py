"""What start-up can tell about a model without loading it."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedserve.models.preflight import looks_like_path, missing, problems
from embedserve.models.spec import ModelSpec


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("/models/bge-m3", True),
        ("./bge-m3", True),
        ("../bge-m3", True),
        ("~/models/x", True),
        ("models/bge/m3", True),
        ("BAAI/bge-m3", False),  # a hub id: only the hub can say
        ("all-MiniLM-L6-v2", False),
    ],
)
def test_paths_are_told_from_hub_ids(source: str, path: bool) -> None:
    assert looks_like_path(source) is path


def test_a_missing_folder_or_a_file_is_a_problem_and_a_folder_is_not(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert problems(ModelSpec(id="m", source=str(tmp_path))) == []
    assert problems(ModelSpec(id="m", source=str(tmp_path / "gone"))) == [
        f"model 'm': {tmp_path / 'gone'} does not exist"
    ]
    assert problems(ModelSpec(id="m", source=str(tmp_path / "file"))) == [
        f"model 'm': {tmp_path / 'file'} is a file, not a model folder"
    ]
    assert problems(ModelSpec(id="m", source="BAAI/bge-m3")) == []


def test_missing_packages_are_named_by_their_distributions() -> None:
    assert missing(("numpy", "sentence_transformers", "no_such_module_here")) == ["no_such_module_here"]
