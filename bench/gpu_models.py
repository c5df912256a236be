"""Random-weight model folders of the real sizes, for GPU throughput runs without a model hub.

Three sentence-transformers folders with the architectures and sizes of the models the GPU bench
compares (configs written here, weights random, saved in bfloat16): MiniLM-L12 (BERT, 33M
parameters), bge-m3 (XLM-R large, 568M) and EmbeddingGemma-300m (Gemma3, bidirectional attention).
Throughput depends on the shapes, not the weights. The tokenizers are the test fixtures' small
trained ones (tests/fixtures/tiny_models.py): a text gets a plausible token count, not the real
model's exact one. `small=True` builds the fixtures' tiny models instead, for smoke tests on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures import tiny_models as fixtures


@dataclass(frozen=True)
class Family:
    name: str
    """The real model it stands for."""
    hidden: int
    pooling: str
    dense: tuple[int, ...]
    """Output sizes of bias-free Dense layers after pooling (EmbeddingGemma: 3072, 768)."""
    tokenizer: Callable[..., Any]
    config: Callable[[Any], Any]
    """The transformers config of the real size, given the tokenizer (for its special token ids)."""
    tiny: Callable[..., Path]
    """The fixtures' builder of the same family in miniature."""


def _minilm_config(tokenizer: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
    )


def _bge_m3_config(tokenizer: Any) -> Any:
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=8194,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _embeddinggemma_config(tokenizer: Any) -> Any:
    """EmbeddingGemma-300m's config.json; rope, activation, norms and the sliding/full layer pattern
    (five sliding, one full) are Gemma3TextConfig's defaults, as in the fixtures' tiny model."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=768,
        num_hidden_layers=24,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        intermediate_size=1152,
        max_position_embeddings=2048,
        sliding_window=fixtures.GEMMA3_SLIDING_WINDOW,
        use_bidirectional_attention=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=False,
    )


FAMILIES: dict[str, Family] = {
    "minilm-l12": Family(
        "all-MiniLM-L12-v2", 384, "mean", (), fixtures.bert_tokenizer, _minilm_config, fixtures.bert_embedder
    ),
    "bge-m3": Family("BAAI/bge-m3", 1024, "cls", (), fixtures.xlmr_tokenizer, _bge_m3_config, fixtures.xlmr_embedder),
    "embeddinggemma-300m": Family(
        "google/embeddinggemma-300m",
        768,
        "mean",
        (3072, 768),
        fixtures.gemma_tokenizer,
        _embeddinggemma_config,
        fixtures.gemma3_embedder,
    ),
}


def build(key: str, folder: Path, *, max_length: int, small: bool = False) -> Path:
    """The family's folder (built once: an existing one is reused), its token limit `max_length`."""
    import json

    family = FAMILIES[key]
    marker = folder / "modules.json"
    if not marker.is_file():
        if small:
            family.tiny(folder)
        else:
            _build_real_size(family, folder)
    config_path = folder / "sentence_bert_config.json"
    config = json.loads(config_path.read_text())
    config["max_seq_length"] = max_length
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _build_real_size(family: Family, folder: Path) -> None:
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = family.tokenizer()
    config = family.config(tokenizer)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 568M parameters is slow on a CPU
    with torch.device(device):
        model = AutoModel.from_config(config)
    model.to(torch.bfloat16).save_pretrained(folder)
    del model
    tokenizer.save_pretrained(folder)
    gemma = config.model_type == "gemma3_text"
    if gemma:
        fixtures._fix_gemma3_sliding_window(folder, fixtures.GEMMA3_SLIDING_WINDOW)
    modules: list[Any] = [
        Transformer(str(folder), model_kwargs={"dtype": torch.bfloat16}),
        Pooling(family.hidden, pooling_mode=family.pooling),
    ]
    width = family.hidden
    for out in family.dense:
        modules.append(Dense(width, out, bias=False, activation_function=None))
        width = out
    modules.append(Normalize())
    fixtures._save_sentence_transformer(folder, modules, prompts=None)
    if gemma:
        fixtures._fix_gemma3_sliding_window(folder, fixtures.GEMMA3_SLIDING_WINDOW)
