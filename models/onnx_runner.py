"""ONNX Runtime runners: no torch. They serve folders written by `embedserve quantize`.

The graph runs the transformer (embedders: `last_hidden_state`; rerankers: `logits`); pooling,
Dense layers and the normalize flag come from the folder's `embedserve.json`, done in numpy.
Tokenization is the same `tokenizers` code the torch runner uses, so items and batches are
identical whichever backend serves them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from embedserve.models.backend import CHUNKS, MULTIVECTOR, NO_OUTPUTS, SPARSE, TOKENS, BatchCost, CpuDefaults
from embedserve.models.cpus import budget_under, cgroup_cpu_quota
from embedserve.models.errors import ModelLoadError
from embedserve.models.exported import int8_numerics, read_config, read_heads
from embedserve.models.heads import colbert_rows, lexical_weights, span_means
from embedserve.models.isa import Isa, exact_isas, exact_on, host_isa
from embedserve.models.length_groups import run_in_groups
from embedserve.models.neighbours import neighbour_meter
from embedserve.models.packed_rows import PackedPass, run_packed
from embedserve.models.pass_gate import PassGate
from embedserve.models.pooling import dense, load_dense, sentence_embeddings
from embedserve.models.prompts import merged_prompts
from embedserve.models.reranker import scores_per_pair
from embedserve.models.spec import ModelSpec
from embedserve.models.threads import CPU_WORKERS
from embedserve.models.tokenizer import PairTokenizer, TextTokenizer
from embedserve.models.types import ModelInfo, SparseVector, Tokens

log = logging.getLogger("embedserve.models")

CPU_BATCH_TOKENS = 1536
"""Padded tokens per batch on a CPU where the operator set none. ONNX Runtime keeps a batch's
activations in its arena for the life of the process, so the budget sets its resident memory under
load: on MiniLM-L6, mixed load, 2 cores, 1536 tokens ran as fast as 2048 and 4096 (ONNX fp32 and
INT8, within the ±10% noise) with 13 and 85 MB less peak RSS (bench/README.md, "Memory")."""


def check_int8_cpu(folder: Path, spec: ModelSpec, isa: Isa | None = None) -> None:
    """Refuses an INT8 graph this CPU (`isa`, default this host's) would compute below the accuracy its
    gate accepted (`models.isa`: 8-bit weights on a CPU without VNNI), unless `spec.int8_any_cpu`,
    which serves it with a warning."""
    numerics = int8_numerics(folder)
    isa = isa or host_isa()
    if numerics is None or exact_on(isa, numerics[1]):
        return
    target, bits = numerics
    what = (
        f"{folder / 'model_int8.onnx'} was quantized for {target} ({bits}-bit weights, exact only on "
        f"{' and '.join(exact_isas(bits))}), and this CPU is {isa} (no VNNI: its int16 sums saturate on them)"
    )
    if spec.int8_any_cpu:
        log.warning("%s; serving it anyway (int8_any_cpu): expect lower accuracy than its manifest's", what)
        return
    raise ModelLoadError(
        f"{what}; quantize it again with `embedserve quantize SOURCE --target portable --out DIR` (the default: "
        f"7-bit weights, exact on every CPU), or set int8_any_cpu (EMBEDSERVE_INT8_ANY_CPU=1) to serve it anyway"
    )


class _OnnxRunner:
    """What both ONNX runners share: the padded forward of one session, no compile step."""

    _onnx: _OnnxSession
    cost: BatchCost = "padded"
    outputs = NO_OUTPUTS

    @property
    def cpu(self) -> CpuDefaults:
        """Two batches at once on the one session, as torch runs them (threads.CPU_WORKERS): a lone batch still has
        the whole team, and a second one's small passes run on its own thread beside the first's, while a big pass
        runs alone unless neighbours keep the cores busy (models.pass_gate says why and what it measured). One under
        a CPU quota below the team's threads (1.5 CPUs: 2 threads): the team already asks for more than the quota,
        so there is no idle core for a second batch to fill, and one cost 7-10% of short and mixed items/s under
        1.5 CPUs (bench/README.md)."""
        threads, quota = self._onnx.threads, self._onnx.cpu_quota
        workers = 1 if quota is not None and quota < threads else min(CPU_WORKERS, threads)
        return CpuDefaults(CPU_BATCH_TOKENS, workers=workers)

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> None:
        return None

    def close(self) -> None:
        self._onnx.session = None  # type: ignore[assignment]


class _OnnxSession:
    """The folder's config, the graph for the requested backend, and the pieces both runners share."""

    def __init__(self, spec: ModelSpec, source: str) -> None:
        import onnxruntime as ort

        folder = Path(source)
        self.config = config = read_config(folder)
        if config["kind"] != spec.kind:
            raise ModelLoadError(
                f"{folder} holds a {config['kind']} model, but {spec.id!r} is configured as {spec.kind}"
            )
        variant = "int8" if spec.backend == "onnx-int8" else "fp32"
        files = config.get("files") or {}
        name = files.get(variant)
        if not name or not (folder / name).is_file():
            raise ModelLoadError(
                f"{folder} has no {variant} graph for backend {spec.backend!r}; run `embedserve quantize`"
            )
        # fp32 runs the packed graph (models.packed_rows) where the folder has one: the same outputs, no work on
        # the padding of texts that arrive together.
        packed = files.get("packed")
        self.packed = bool(variant == "fp32" and spec.packing != "off" and packed and (folder / packed).is_file())
        if self.packed:
            name = packed
        self.pad_id = int(config["pad_id"])
        if variant == "int8":
            check_int8_cpu(folder, spec)
        options = ort.SessionOptions()
        self.cpu_quota = cgroup_cpu_quota()
        options.intra_op_num_threads = self.threads = spec.threads or budget_under(self.cpu_quota)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Memory patterns plan one block per input shape and keep it in the arena; the batcher makes
        # a new (items, length) shape nearly every batch, so the arena kept growing under load
        # (MiniLM-L6, mixed load: ~+55 MB RSS, same items/s without them; see bench/README.md).
        options.enable_mem_pattern = False
        # Idle intra-op threads sleep instead of spinning: spinning bought nothing on a quiet CPU (MiniLM, 2 cores,
        # 32 clients: short 0.98x, mixed 1.11x with it off) and beside a busy core it burned the time the other
        # threads of the team waited for (short 187 -> 286 items/s, mixed 51 -> 58 with it off; bench/README.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if spec.device == "cuda" or (
            spec.device == "auto" and "CUDAExecutionProvider" in ort.get_available_providers()
        ):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelLoadError("device 'cuda' was asked, but this onnxruntime has no CUDA provider")
            providers.insert(0, "CUDAExecutionProvider")
        elif spec.device not in ("auto", "cpu"):
            raise ModelLoadError(f"the ONNX backends run on cpu or cuda, not {spec.device!r}")
        try:
            self.session = ort.InferenceSession(str(folder / name), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise ModelLoadError(f"cannot load {folder / name}: {exc}") from exc
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.passes = PassGate(crowded=neighbour_meter().crowded) if self.device == "cpu" else PassGate()
        self.dtype = "int8" if variant == "int8" else "float32"
        self.max_length = min(x for x in (spec.max_length, int(config["max_length"])) if x)
        self.folder = folder

    def tokenizer(self) -> Tokenizer:
        """A fresh tokenizer from the folder, for the runner's tokenizer to own (no second copy)."""
        return Tokenizer.from_file(str(self.folder / "tokenizer.json"))

    def feeds(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: array.astype(np.int64, copy=False) for name, array in arrays.items() if name in self.inputs}

    def run(self, output: str, arrays: dict[str, np.ndarray], *, per_token: bool) -> np.ndarray:
        """One output of the graph over a padded batch: on the packed graph in passes of packed rows, laid back as
        the padded batch's; otherwise run in length groups where that pads less than it costs in forward passes
        (models.length_groups)."""
        if self.packed:

            def forward_packed(packed: PackedPass) -> np.ndarray:
                with self.passes.passing(packed.rows * packed.width):
                    (result,) = self.session.run([output], self.feeds(packed.feeds))
                return result

            return run_packed(arrays, self.pad_id, forward_packed)

        def forward(part: dict[str, np.ndarray]) -> np.ndarray:
            with self.passes.passing(part["attention_mask"].size):
                (result,) = self.session.run([output], self.feeds(part))
            return result

        return run_in_groups(arrays, forward, per_token=per_token)

    def info(
        self,
        spec: ModelSpec,
        *,
        width: int,
        normalized: bool,
        output_widths: dict[str, int] | None = None,
        labels: tuple[str, ...] = (),
    ) -> ModelInfo:
        config = self.config
        return ModelInfo(
            id=spec.id,
            kind=spec.kind,
            width=width,
            max_length=self.max_length,
            backend=spec.backend,
            device=self.device,
            dtype=self.dtype,
            normalized=normalized,
            prompts=merged_prompts(config.get("prompts"), spec.prompts),
            default_prompt=spec.default_prompt or config.get("default_prompt"),
            output_widths=output_widths or {},
            labels=labels,
        )


class OnnxEmbeddingRunner(_OnnxRunner):
    def __init__(self, spec: ModelSpec, source: str) -> None:
        self._onnx = onnx = _OnnxSession(spec, source)
        config = onnx.config
        pooling = config.get("pooling") or {}
        self._pooling_mode = pooling.get("mode", "mean")
        self._dense = load_dense(onnx.folder, config.get("dense") or [])
        backend = onnx.tokenizer()
        self.tokenizer = TextTokenizer(
            backend,
            max_length=onnx.max_length,
            pad_id=int(config["pad_id"]),
            vocab_size=int(config.get("vocab_size") or backend.get_vocab_size()),
            with_type_ids=bool(config["with_type_ids"]),
            copy=False,
        )
        self._heads = heads = read_heads(onnx.folder, config)
        self.info = onnx.info(
            spec,
            width=int(config["dimension"]),
            normalized=bool(config["normalize"]),
            output_widths={MULTIVECTOR: len(heads.colbert.weight)} if heads.colbert is not None else {},
        )
        self.outputs = {TOKENS: self.run_tokens, CHUNKS: self.run_chunks}
        if heads.sparse is not None:
            self.outputs[SPARSE] = self.run_sparse
        if heads.colbert is not None:
            self.outputs[MULTIVECTOR] = self.run_multivector

    def _hidden(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self._onnx.run("last_hidden_state", arrays, per_token=True)

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        arrays = self.tokenizer.pad(batch)
        return sentence_embeddings(self._hidden(arrays), arrays["attention_mask"], self._pooling_mode, self._dense)

    def run_tokens(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """Each item's last hidden state, special tokens included."""
        hidden = self._hidden(self.tokenizer.pad(batch))
        return [np.ascontiguousarray(hidden[row, : len(item)], dtype=np.float32) for row, item in enumerate(batch)]

    def run_sparse(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        """bge-m3's lexical weights (models.heads), from the folder's sparse head."""
        head = self._heads.sparse
        assert head is not None  # declared in `outputs` only with its head
        weights = np.maximum(head(self._hidden(self.tokenizer.pad(batch))), 0)[..., 0]
        return lexical_weights(weights, batch, self._heads.unused_ids)

    def run_multivector(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """bge-m3's multi-vector rows (models.heads), from the folder's colbert head."""
        head = self._heads.colbert
        assert head is not None
        return colbert_rows(head(self._hidden(self.tokenizer.pad(batch))[:, 1:]), batch)

    def run_chunks(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """Late chunking: per item, the mean of each span's token vectors, then the Dense layers; not normalized."""
        hidden = self._hidden(self.tokenizer.pad(batch))
        out = []
        for row, item in enumerate(batch):
            x = span_means(hidden[row], item.spans)
            for layer in self._dense:
                x = dense(x, layer.weight, layer.bias, layer.activation)
            out.append(np.ascontiguousarray(x, dtype=np.float32))
        return out


class OnnxRerankRunner(_OnnxRunner):
    def __init__(self, spec: ModelSpec, source: str) -> None:
        self._onnx = onnx = _OnnxSession(spec, source)
        config = onnx.config
        self.num_labels = int(config.get("num_labels") or 1)
        self.tokenizer = PairTokenizer(
            onnx.tokenizer(),
            max_length=onnx.max_length,
            pad_id=int(config["pad_id"]),
            with_type_ids=bool(config["with_type_ids"]),
            truncation_side=config.get("truncation_side", "right"),
            copy=False,
        )
        labels = tuple(config.get("labels") or (f"LABEL_{i}" for i in range(self.num_labels)))
        self.info = onnx.info(spec, width=self.num_labels, normalized=False, labels=labels)

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        arrays = self.tokenizer.pad(batch)
        logits = self._onnx.run("logits", arrays, per_token=False)
        return scores_per_pair(logits, self.num_labels, len(batch))
