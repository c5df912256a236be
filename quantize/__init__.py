"""Export models to ONNX folders embedserve serves, and quantize them to INT8.

`export_model` writes the fp32 folder (verified against PyTorch); `quantize_model` (the
`embedserve quantize` tool) adds the INT8 graph, an accuracy and speed report, and manifest.json.
Heavy libraries (torch, optimum, onnxruntime) are imported only when those functions run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedserve.quantize.build import Options, Outcome

__all__ = ["export_model", "quantize_model"]


def export_model(source: str | Path, out: Path, **kwargs: Any) -> Path:
    from embedserve.quantize.export import export_model as _export_model

    return _export_model(source, out, **kwargs)


def quantize_model(source: str | Path, out: Path, options: Options | None = None) -> Outcome:
    from embedserve.quantize.build import quantize_model as _quantize_model

    return _quantize_model(source, out, options)
