"""Writing the fp32 ONNX graph of a Hugging Face model: optimum-onnx's exporter where it supports
the family, `torch.onnx.export` of the model itself otherwise.

Either way the graph's interface is fixed: int64 `input_ids`, `attention_mask` (and
`token_type_ids` when the tokenizer produces them) with dynamic batch and sequence axes, and one
float32 output (`last_hidden_state` or `logits`). A graph whose interface differs is refused here,
so callers can fall back to the other exporter.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx

from embedserve.quantize.pipeline import ExportError

log = logging.getLogger("embedserve.quantize")

DEFAULT_OPSET = 17


def clear_graph(path: Path) -> None:
    """Removes a graph and its external-data files, so a re-export never mixes two of them."""
    for old in path.parent.glob(path.name + "*"):
        old.unlink()


def externalize_weights(path: Path) -> None:
    """Moves the graph's weights into `<name>.data` beside it (ONNX external data), unless some are
    there already (graphs past protobuf's 2 GB limit are written that way from the start).

    onnxruntime memory-maps external data on the CPU instead of copying every weight out of the
    parsed graph: MiniLM-L6's server loads ~45 MB lower, and file pages it never touches again
    (weights it repacks for its kernels, rows of the embedding table no input uses) stay out of
    resident memory. The data file gets the graph's permissions (onnx writes it 0600)."""
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, location=data.name, size_threshold=1024)
    data.chmod(path.stat().st_mode & 0o777)


SHARED_WEIGHTS = "weights.onnx.data"
"""The one external-data file the graphs of an export (model.onnx and model_packed.onnx) read their weights from."""


def fp32_graphs(config: dict[str, Any]) -> list[str]:
    """The fp32 graphs a folder's config lists: model.onnx, and the packed one where it has one."""
    files = config.get("files") or {}
    return [name for name in (files.get("fp32"), files.get("packed")) if name]


def share_weights(folder: Path, graphs: list[str]) -> None:
    """Rewrites the graphs in `folder` so that each weight is stored once, in SHARED_WEIGHTS, which every graph
    reads (ONNX external data: a file, an offset and a length per tensor). The packed graph holds the same weights
    as model.onnx: a second copy would double the export on disk and in an image (2.2 GB more for bge-m3).
    Tensors under 1 KiB stay in their graph; each stored tensor starts on a 4 KiB boundary, where onnxruntime
    memory-maps it. The graphs' former external-data files are removed."""
    from onnx.external_data_helper import load_external_data_for_model, set_external_data

    old_files: set[Path] = set()
    stored: dict[tuple[bytes, int, tuple[int, ...]], tuple[int, int]] = {}
    partial = folder / (SHARED_WEIGHTS + ".partial")
    models = []
    with partial.open("wb") as data:
        for graph in graphs:
            model = onnx.load(str(folder / graph), load_external_data=False)
            for tensor in model.graph.initializer:  # where its weights are now, before they are read in
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    old_files.update(folder / entry.value for entry in tensor.external_data if entry.key == "location")
            load_external_data_for_model(model, str(folder))
            for tensor in model.graph.initializer:
                if not tensor.HasField("raw_data") or len(tensor.raw_data) < 1024:
                    continue
                key = (hashlib.blake2b(tensor.raw_data, digest_size=16).digest(), tensor.data_type, tuple(tensor.dims))
                if key not in stored:
                    data.write(b"\0" * (-data.tell() % 4096))
                    stored[key] = (data.tell(), len(tensor.raw_data))
                    data.write(tensor.raw_data)
                offset, length = stored[key]
                set_external_data(tensor, SHARED_WEIGHTS, offset, length)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
            models.append((graph, model))
    for stale in old_files:
        stale.unlink(missing_ok=True)
    partial.rename(folder / SHARED_WEIGHTS)
    for graph, model in models:
        onnx.save_model(model, str(folder / graph))


def check_interface(path: Path, inputs: list[str], output: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    got_inputs = [i.name for i in model.graph.input]
    got_outputs = [o.name for o in model.graph.output]
    if sorted(got_inputs) != sorted(inputs) or got_outputs[:1] != [output]:
        raise ExportError(f"graph has inputs {got_inputs} and outputs {got_outputs}; expected {inputs} -> {output}")
    for value in model.graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            raise ExportError(f"graph input {value.name} is not int64")
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 2 or any(d.HasField("dim_value") for d in dims):
            raise ExportError(f"graph input {value.name} lacks dynamic batch and sequence axes")


def export_with_optimum(
    model: Any, path: Path, *, task: str, inputs: list[str], output: str, opset: int | None
) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    # optimum warns on every export that its weight-deduplication check needs accelerate: not a problem
    # (the graph is verified against torch afterwards), so not something to alarm users with.
    noisy = logging.getLogger("optimum.exporters.onnx.base")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="embedserve-optimum-") as tmp, quiet_tracing():
            onnx_export_from_model(model, tmp, task=task, opset=opset, do_validation=False)
            check_interface(Path(tmp) / "model.onnx", inputs, output)
            clear_graph(path)
            for produced in Path(tmp).glob("model.onnx*"):  # the graph and any external-data file
                shutil.move(str(produced), path.parent / produced.name.replace("model.onnx", path.name, 1))
    finally:
        noisy.setLevel(level)


def _mask_by_broadcasting(
    batch_size: int,
    cache_position: Any,
    kv_length: int,
    kv_offset: int = 0,
    mask_function: Callable[..., Any] | None = None,
    attention_mask: Any = None,
    **_: Any,
) -> Any:
    """transformers' boolean 4D attention mask, built by broadcasting index tensors through the
    mask function instead of `torch.vmap`, which the TorchScript tracer cannot follow. Never skipped
    for an all-ones padding mask, so the traced graph keeps the mask whatever the padding."""
    import torch
    from transformers.masking_utils import and_masks, causal_mask_function, padding_mask_function, prepare_padding_mask

    function = mask_function or causal_mask_function
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
    if padding is not None:
        function = and_masks(function, padding_mask_function(padding.bool()))
    device = cache_position.device
    b = torch.arange(batch_size, device=device)[:, None, None, None]
    h = torch.arange(1, device=device)[None, :, None, None]
    q = cache_position[None, None, :, None]
    kv = (torch.arange(kv_length, device=device) + kv_offset)[None, None, None, :]
    mask = torch.as_tensor(function(b, h, q, kv), dtype=torch.bool, device=device)
    return mask.expand(batch_size, 1, cache_position.shape[0], kv_length)


def _additive_mask_by_broadcasting(*args: Any, dtype: Any = None, **kwargs: Any) -> Any:
    import torch

    dtype = dtype or torch.float32
    kwargs.pop("allow_is_causal_skip", None)
    mask = _mask_by_broadcasting(*args, **kwargs)
    return torch.where(mask, torch.tensor(0.0, dtype=dtype), torch.finfo(dtype).min)


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Tracer warnings about constants in the trace: expected (verification checks the graph)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # The torch.export-based exporter needs onnxscript (not a dependency); the legacy one is used on purpose.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        yield


@contextlib.contextmanager
def _traceable_masks() -> Iterator[None]:
    """Swaps transformers' vmap-based mask builders (used by Gemma3, Qwen3, ... since 4.53) for
    broadcasting ones while tracing; encoder families (BERT, XLM-R) never call them."""
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    except ImportError:  # older transformers: no mask interface to patch
        yield
        return
    saved = {name: ALL_MASK_ATTENTION_FUNCTIONS[name] for name in ("sdpa", "eager")}
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa", _mask_by_broadcasting)
    ALL_MASK_ATTENTION_FUNCTIONS.register("eager", _additive_mask_by_broadcasting)
    try:
        yield
    finally:
        for name, function in saved.items():
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, function)


class _Forward:
    """Builds the torch module whose forward takes exactly the graph inputs, positionally."""

    @staticmethod
    def module(model: Any, inputs: list[str], output: str) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                result = self.model(**dict(zip(inputs, args)), return_dict=True)
                return getattr(result, output)

        return Wrapped().eval()


def export_with_torch(
    model: Any, path: Path, *, inputs: list[str], output: str, opset: int | None, pad_id: int
) -> None:
    """torch.onnx's TorchScript exporter on the model itself, traced on a right-padded batch so the
    padding-mask path (not an all-ones shortcut) is what lands in the graph."""
    import torch

    lengths = (12, 7)
    ids = torch.full((2, 12), pad_id, dtype=torch.int64)
    mask = torch.zeros((2, 12), dtype=torch.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.arange(5, 5 + n)
        mask[row, :n] = 1
    dummy = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    dynamic = {name: {0: "batch_size", 1: "sequence_length"} for name in inputs}
    dynamic[output] = {0: "batch_size", 1: "sequence_length"} if output == "last_hidden_state" else {0: "batch_size"}
    clear_graph(path)
    config = getattr(model, "config", None)
    previous = getattr(config, "use_cache", None)
    if previous is not None:
        config.use_cache = False
    try:
        with torch.no_grad(), _traceable_masks(), quiet_tracing():
            torch.onnx.export(
                _Forward.module(model, inputs, output),
                tuple(dummy[name] for name in inputs),
                str(path),
                input_names=inputs,
                output_names=[output],
                dynamic_axes=dynamic,
                opset_version=opset or DEFAULT_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        if previous is not None:
            config.use_cache = previous
    check_interface(path, inputs, output)
