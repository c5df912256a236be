"""The public HTTP contract, pinned: the OpenAPI document the app serves is the one in
tests/server/contract/openapi.json, path for path and schema for schema (the version aside).

Refactors keep it; a change to the contract changes that file in the same commit, on purpose:
regenerate it with `python -m tests.server.test_openapi_contract > tests/server/contract/openapi.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from embedserve.server.app import create_app
from embedserve.server.config.settings import Settings

PINNED = Path(__file__).parent / "contract" / "openapi.json"


def served_document() -> dict[str, Any]:
    document = create_app(Settings()).openapi()
    return {**document, "info": {k: v for k, v in document["info"].items() if k != "version"}}


def test_the_openapi_document_is_the_pinned_contract() -> None:
    pinned = json.loads(PINNED.read_text())
    served = json.loads(json.dumps(served_document()))  # tuples and the like as JSON has them
    assert sorted(served["paths"]) == sorted(pinned["paths"])
    for path, operations in pinned["paths"].items():
        assert served["paths"][path] == operations, path
    assert served["components"] == pinned["components"]
    assert served == pinned


if __name__ == "__main__":
    sys.stdout.write(json.dumps(served_document(), indent=1, sort_keys=True) + "\n")
