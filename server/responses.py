"""Fast JSON answers: orjson writes numpy float32 rows directly, no list conversion."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def base64_float32(row: np.ndarray) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes of the vector."""
    return base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
