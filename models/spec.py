"""What a served model is: the settings a registry entry is built from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from embedserve.models.backend import BACKENDS

ModelKind = Literal["embed", "rerank", "classify"]
Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Compile = Literal["auto", "off", "on"]
Packing = Literal["auto", "off"]
AUTO_BACKEND = "auto"
"""Not a backend: resolved to one before loading (quantize.served_export.resolve_backend)."""


class ModelSpec(BaseModel):
    """One served model. Only `id` and `source` are required; the rest has working defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Name clients send as `model`.")
    source: str = Field(min_length=1, description="A local model folder, or a hub id where a hub is reachable.")
    aliases: tuple[str, ...] = ()
    kind: ModelKind = "embed"
    backend: str = Field(
        default=AUTO_BACKEND,
        description="A registered backend (models.backend): torch, onnx, onnx-int8; or auto (the default): ONNX fp32 "
        "on a CPU, exported once and cached (quantize.served_export), torch where it cannot be.",
    )
    device: Device = "auto"
    dtype: DType = "auto"
    max_length: int | None = Field(default=None, gt=0, description="Token limit; default: the folder's own.")
    threads: int | None = Field(default=None, gt=0, description="Intra-op threads for this model's runner.")
    compile: Compile = Field(
        default="auto",
        description="torch.compile the forward pass, every length bucket at start-up (torch backend); "
        "auto: on for CUDA, off elsewhere.",
    )
    packing: Packing = Field(
        default="auto",
        description="auto: the families with a packed runner (models.families: BERT, RoBERTa, XLM-R, bidirectional "
        "Gemma3, ModernBERT, Qwen3 without sliding windows) run on real tokens only, no work on padding (torch "
        "backend, uncompiled), and an ONNX fp32 folder with a packed graph (BERT, RoBERTa, XLM-R: several texts a "
        "row, models.packed_rows) runs it; off: the model's own padded forward and graph.",
    )
    int8_any_cpu: bool = Field(
        default=False,
        description="Serve an INT8 graph even on a CPU whose kernels compute it below the accuracy it was "
        "accepted with (8-bit weights on x86 without VNNI), with a warning; by default such a load is refused.",
    )
    template: str | None = Field(
        default=None,
        description="An LLM reranker's yes/no template (models.yes_no): qwen3-reranker; default: the one for the "
        "folder's model family.",
    )
    prompts: dict[str, str] = Field(
        default_factory=dict, description="Prompts by name, added to (and overriding) the folder's own."
    )
    default_prompt: str | None = Field(
        default=None, description="Prompt name used when a request names none; default: the folder's own."
    )

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, name: str) -> str:
        if name not in BACKENDS and name != AUTO_BACKEND:
            raise ValueError(f"unknown backend {name!r}; known: {', '.join([*BACKENDS, AUTO_BACKEND])}")
        return name

    @field_validator("template")
    @classmethod
    def _known_template(cls, name: str | None) -> str | None:
        from embedserve.models.yes_no import TEMPLATES

        if name is not None and name not in TEMPLATES:
            raise ValueError(f"unknown yes/no template {name!r}; known: {', '.join(TEMPLATES)}")
        return name

    @field_validator("compile", "packing", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object, info: ValidationInfo) -> object:
        """YAML 1.1 reads a bare `on`/`off` as true/false."""
        if isinstance(value, bool):
            return ("on" if info.field_name == "compile" else "auto") if value else "off"
        return value

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)
