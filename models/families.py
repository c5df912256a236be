"""What each model family supports, in one place: runners, quantize and tests read it here.

A family is a set of transformers `model_type`s that share an architecture. What a family states:
- `name`: what messages call it;
- `model_types`: the transformers `model_type`s it covers, each in one family only;
- `packed`: the class name of the models.packed_encoder runner that runs it on real tokens only, no
  work on padding (None: the padded forward only); that runner still refuses a model of the family
  whose variant it cannot run (causal attention, relative positions) with the reason;
- `classifiers`: its transformers sequence-classification classes (cross-encoders) that run packed:
  the packed encoder, then the model's own head;
- `classifier_pooler`: those heads read the model's pooler (BERT: first token, dense, tanh), not the
  hidden states (RoBERTa's head takes the first token itself);
- `float16`: its activations fit float16 (Gemma3's overflow: float32 or bfloat16 only);
- `position_offset`: position ids that start after the padding index (RoBERTa-style), so the
  usable length is `max_position_embeddings - offset`;
- `onnx_fusions`: the onnxruntime transformer optimizer's model type for its fusions (quantize), if any:
  encoders only, as its decoder fusions expect causal, KV-cached graphs;
- `packed_graph`: its ONNX export gets a packed graph too (quantize.packed_graph: several texts a row), as its
  position embeddings are absolute and indexed by `position_ids` and its attention takes a [rows, width, width]
  mask.
Every family compiles (torch.compile) and exports to ONNX; an unknown `model_type` gets the
padded forward, no fusions and float16 allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    packed: str | None = None
    classifiers: tuple[str, ...] = ()
    classifier_pooler: bool = False
    float16: bool = True
    position_offset: int = 0
    onnx_fusions: str | None = None
    packed_graph: bool = False


FAMILIES: tuple[Family, ...] = (
    Family(
        "bert",
        ("bert",),
        packed="PackedEncoder",
        classifiers=("BertForSequenceClassification",),
        classifier_pooler=True,
        onnx_fusions="bert",
        packed_graph=True,
    ),
    Family(
        "roberta",
        ("roberta", "xlm-roberta", "camembert"),
        packed="PackedEncoder",
        classifiers=(
            "RobertaForSequenceClassification",
            "XLMRobertaForSequenceClassification",
            "CamembertForSequenceClassification",
        ),
        position_offset=2,
        onnx_fusions="bert",
        packed_graph=True,
    ),
    Family("gemma3", ("gemma3", "gemma3_text"), packed="PackedGemma3", float16=False),
    # Qwen3-Embedding: decoder-only, causal, last-token pooling. float16 left allowed (bf16-trained, commonly
    # served in fp16; not checked here on real weights); no fusions (the optimizer's decoder ones expect KV caches).
    Family("qwen3", ("qwen3",), packed="PackedQwen3"),
    # No fusions: onnxruntime's transformer optimizer has no ModernBERT model type.
    Family("modernbert", ("modernbert",), packed="PackedModernBert"),
    Family("bert-like", ("distilbert", "electra", "mpnet", "ernie"), onnx_fusions="bert"),
)

_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def family_of(model_type: str | None) -> Family:
    """The family of a transformers `model_type`; an unknown one is a family of its own that supports
    only what every model does."""
    return _BY_TYPE.get(model_type or "") or Family(model_type or "unknown", (model_type or "unknown",))


def position_limit(config: Any) -> int | None:
    """The longest sequence a transformers config's position embeddings allow (None: it declares none)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        return None
    return int(limit) - family_of(getattr(config, "model_type", None)).position_offset
