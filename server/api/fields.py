"""Field types that accept exactly what the published JSON Schema says.

pydantic's lax mode coerces more than the schema allows: `0`, `0.0` and `"yes"` as booleans, `true`
and `"5"` as integers, `true` and `"0.5"` as numbers. The schema says `boolean`, `integer` and `number`, so requests must send those JSON types
(an integer may be written `5.0`, which JSON Schema's `integer` allows).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, StrictBool, StrictStr
from pydantic_core import PydanticCustomError


def _json_integer(value: object) -> object:
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _json_number(value: object) -> object:
    if isinstance(value, bool | str):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


# The bound sits inside the type (before the validator) so that the schema says `exclusiveMinimum`/`minimum`.
PositiveInt = Annotated[int, Field(gt=0), BeforeValidator(_json_integer)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]
NonNegativeNumber = Annotated[float, Field(ge=0), BeforeValidator(_json_number)]
JsonBool = StrictBool

NonEmptyText = Annotated[StrictStr, Field(min_length=1)]
"""A text to embed or score: a JSON string, not empty (an empty text has no tokens to pool)."""
