"""Models run on a batch's real tokens only: BERT, RoBERTa, XLM-R, bidirectional Gemma3, ModernBERT and
Qwen3 (causal).

A padded batch pays for its pad positions in every projection and feed-forward layer, which is
nearly all of an encoder's work: on MiniLM-L6 under a server's load, batches of short queries
held ~40% pad positions and mixed traffic ~20%. Here a batch's tokens are packed into one
[tokens, hidden] matrix for the embeddings, projections, feed-forward layers and layer norms;
attention alone, which mixes tokens of one text, runs on padded [rows, heads, length, head] grids
with the key mask (and the model's sliding window or causal order), one grid per group of similar
lengths. The weights are the model's own modules, so outputs equal the model's padded forward up to
float rounding (tests hold it to 1e-5 on real MiniLM and tiny BERT / XLM-R / Gemma3 / ModernBERT /
Qwen3 and the rerankers).

Where the real tokens sit is worked out on the host from the numpy mask, so a CUDA device never
synchronises to find them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embedserve.models.families import FAMILIES, family_of


@dataclass(frozen=True, slots=True)
class AttentionGroup:
    """Rows whose attention runs together on one padded [rows, length] grid."""

    rows: int
    length: int
    tokens: np.ndarray | None
    """Positions of the group's tokens in the packed order; None when the group holds them all."""
    grid_index: np.ndarray
    """Flat positions (row * length + column) of those tokens in the group's grid."""
    key_mask: np.ndarray
    """[rows, length] bool: the real tokens, which attention may look at."""


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """A padded batch's real tokens (where attention_mask is 1, on either side) in row order, and
    where they sit in its grid."""

    rows: int
    length: int
    index: np.ndarray
    """Flat positions (row * length + column) of the real tokens."""
    input_ids: np.ndarray
    position_ids: np.ndarray
    token_type_ids: np.ndarray | None
    groups: tuple[AttentionGroup, ...]


def attention_groups(lengths: np.ndarray, hidden: int) -> list[np.ndarray]:
    """Rows grouped for attention, longest first. A row starts a new group when padding it to the
    group's longest would waste more attention work than a quarter of its own projections and
    feed-forward (attention costs ~4·L·H per token per layer, the rest ~24·H²): short queries
    batched with a long passage no longer attend over the passage's length."""
    order = np.argsort(-lengths, kind="stable")
    groups: list[list[int]] = []
    longest = 0
    for row in order.tolist():
        length = int(lengths[row])
        if not groups or (2 * length < longest and longest * longest > 1.5 * hidden * length):
            groups.append([])
            longest = length
        groups[-1].append(row)
    return [np.array(sorted(group), dtype=np.int64) for group in groups]


def pack(arrays: dict[str, np.ndarray], *, roberta_positions: bool, padding_idx: int, hidden: int) -> PackedBatch:
    """Packs a padded batch (`input_ids`, `attention_mask`, optional `token_type_ids`).

    Positions follow the model's own rule: BERT numbers columns from 0; RoBERTa-style models count
    non-pad ids from padding_idx + 1 (transformers' create_position_ids_from_input_ids).
    """
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    rows, length = ids.shape
    key_mask = mask.astype(bool)
    index = np.flatnonzero(key_mask)
    if roberta_positions:
        not_pad = ids != padding_idx
        positions = np.cumsum(not_pad, axis=1) * not_pad + padding_idx
    else:
        positions = np.broadcast_to(np.arange(length, dtype=np.int64), (rows, length))
    types = arrays.get("token_type_ids")
    return PackedBatch(
        rows=rows,
        length=length,
        index=index,
        input_ids=ids.ravel()[index],
        position_ids=positions.ravel()[index],
        token_type_ids=types.ravel()[index] if types is not None else None,
        groups=_groups(key_mask, hidden),
    )


def _groups(key_mask: np.ndarray, hidden: int) -> tuple[AttentionGroup, ...]:
    """Each group's grid holds its rows' tokens from column 0 on, whichever side the batch was padded
    on (Qwen3's tokenizers pad left): a row's real tokens are contiguous, so distances between columns
    (causal order, sliding windows) are those of the batch, and no query row of a grid is all padding
    before its keys (a causal mask would leave it nothing to attend to)."""
    lengths = key_mask.sum(axis=1)
    row_groups = attention_groups(lengths, hidden)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    groups = []
    for members in row_groups:
        counts = lengths[members]
        width = int(counts.max())
        group_mask = np.arange(width) < counts[:, None]
        tokens = None
        if len(row_groups) > 1:
            tokens = np.concatenate([np.arange(starts[r], starts[r] + lengths[r]) for r in members])
        groups.append(AttentionGroup(len(members), width, tokens, np.flatnonzero(group_mask), group_mask))
    return tuple(groups)


class _DeviceGroup:
    """An AttentionGroup's indices and mask as tensors on the model's device, made once per batch."""

    def __init__(self, group: AttentionGroup, device: Any) -> None:
        import torch

        self.rows, self.length = group.rows, group.length
        self.tokens = torch.from_numpy(group.tokens).to(device, non_blocking=True) if group.tokens is not None else None
        self.grid_index = torch.from_numpy(group.grid_index).to(device, non_blocking=True)
        self.key_mask = torch.from_numpy(group.key_mask).to(device, non_blocking=True)[:, None, None, :]


class _DeviceTokens:
    """A PackedBatch's token ids, positions and token types as tensors on the model's device."""

    def __init__(self, batch: PackedBatch, device: Any) -> None:
        import torch

        self.ids = torch.from_numpy(batch.input_ids).to(device, non_blocking=True)
        self.positions = torch.from_numpy(np.ascontiguousarray(batch.position_ids)).to(device, non_blocking=True)
        types = batch.token_type_ids
        self.types = torch.from_numpy(types).to(device, non_blocking=True) if types is not None else None


@dataclass(frozen=True, slots=True)
class _Attention:
    """How one layer's attention runs: (query heads, key/value heads), the score scale (None:
    1/sqrt(head_dim)), the sliding window and causality."""

    heads: tuple[int, int]
    scale: float | None
    window: int | None
    causal: bool


class _PackedModel:
    """What every packed family shares: the packing, the grid the output goes back to, and
    attention run group by group on padded grids."""

    hidden: int
    roberta_positions = False
    padding_idx = 0

    def __init__(self, model: Any) -> None:
        reason = self.unsupported(model)
        if reason is not None:
            raise ValueError(f"cannot run this model packed: {reason}")
        import torch

        self._torch = torch

    @classmethod
    def unsupported(cls, model: Any) -> str | None:
        """Why `model` cannot run packed on this runner, or None when it can."""
        raise NotImplementedError

    @classmethod
    def runs_family_of(cls, model: Any) -> bool:
        """Whether `model`'s family (`Family.packed`) names this runner."""
        return family_of(getattr(getattr(model, "config", None), "model_type", None)).packed == cls.__name__

    def pack(self, arrays: dict[str, np.ndarray]) -> PackedBatch:
        return pack(arrays, roberta_positions=self.roberta_positions, padding_idx=self.padding_idx, hidden=self.hidden)

    def __call__(self, batch: PackedBatch, device: Any) -> Any:
        """The last hidden state, [rows, length, hidden], zeros at pad positions (call under inference_mode)."""
        torch = self._torch
        groups = [_DeviceGroup(group, device) for group in batch.groups]
        hidden = self._forward(_DeviceTokens(batch, device), groups)
        grid = hidden.new_zeros(batch.rows * batch.length, self.hidden)
        grid[torch.from_numpy(batch.index).to(device, non_blocking=True)] = hidden
        return grid.view(batch.rows, batch.length, self.hidden)

    def _forward(self, tokens: _DeviceTokens, groups: list[_DeviceGroup]) -> Any:
        """[tokens, hidden] in packed order."""
        raise NotImplementedError

    def _attend(
        self,
        q: Any,
        k: Any,
        v: Any,
        groups: list[_DeviceGroup],
        *,
        scale: float | None = None,
        window: int | None = None,
        causal: bool = False,
    ) -> Any:
        """Attention of packed [tokens, heads, head_dim] queries over keys and values (fewer heads:
        grouped-query attention), each group on its own padded grid; [tokens, heads * head_dim] out.
        `window`: tokens attend only to those less than `window` positions away (a sliding window
        both ways); `causal`: only to themselves and earlier tokens."""
        fused = self._torch.cat((q, k, v), dim=1)
        mode = _Attention((q.shape[1], k.shape[1]), scale, window, causal)
        if len(groups) == 1:
            return self._attend_group(fused, groups[0], mode)
        out = fused.new_empty(fused.shape[0], q.shape[1] * q.shape[2])
        for group in groups:
            out[group.tokens] = self._attend_group(fused[group.tokens], group, mode)
        return out

    def _attend_group(self, fused: Any, group: _DeviceGroup, mode: _Attention) -> Any:
        torch = self._torch
        rows, length = group.rows, group.length
        q_heads, kv_heads = mode.heads
        grid = fused.new_zeros(rows * length, fused.shape[1], fused.shape[2])
        grid[group.grid_index] = fused
        grid = grid.view(rows, length, fused.shape[1], fused.shape[2]).transpose(1, 2)
        q, k, v = grid[:, :q_heads], grid[:, q_heads : q_heads + kv_heads], grid[:, q_heads + kv_heads :]
        if kv_heads != q_heads:
            k = k.repeat_interleave(q_heads // kv_heads, dim=1)
            v = v.repeat_interleave(q_heads // kv_heads, dim=1)
        mask = group.key_mask
        if (mode.window is not None and length > mode.window) or mode.causal:
            columns = torch.arange(length, device=mask.device)
            offsets = columns[None, :] - columns[:, None]  # key column - query column
            if mode.window is not None and length > mode.window:
                mask = mask & (offsets.abs() < mode.window)
            if mode.causal:
                mask = mask & (offsets <= 0)
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=mode.scale)
        return context.transpose(1, 2).reshape(rows * length, -1)[group.grid_index]


class PackedEncoder(_PackedModel):
    """A transformers BertModel / XLMRobertaModel (eval mode) on packed tokens."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        config = model.config
        self._embeddings = model.embeddings
        self._layers = list(model.encoder.layer)
        self._heads = config.num_attention_heads
        self.hidden = config.hidden_size
        self._head_size = self.hidden // self._heads
        self.roberta_positions = family_of(config.model_type).position_offset > 0
        self.padding_idx = getattr(self._embeddings, "padding_idx", None) or config.pad_token_id or 0

    @classmethod
    def unsupported(cls, model: Any) -> str | None:
        config = getattr(model, "config", None)
        if not cls.runs_family_of(model):
            # Post-LayerNorm encoders with absolute positions and BertLayer modules.
            bert_layout = " and ".join(f.name for f in FAMILIES if f.packed == cls.__name__)
            model_type = getattr(config, "model_type", None)
            return f"model type {model_type!r} does not run packed: the BertLayer layout is {bert_layout}'s"
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            return f"position embeddings are {config.position_embedding_type!r}, not absolute"
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            return "the model is a decoder"
        if not (hasattr(model, "embeddings") and hasattr(model, "encoder")):
            return "the model has no embeddings/encoder modules"
        return None

    def _forward(self, tokens: _DeviceTokens, groups: list[_DeviceGroup]) -> Any:
        emb = self._embeddings
        types = tokens.types if tokens.types is not None else self._torch.zeros_like(tokens.ids)
        # The same additions in the same order as BertEmbeddings / XLMRobertaEmbeddings.
        hidden = emb.word_embeddings(tokens.ids) + emb.token_type_embeddings(types)
        hidden = emb.LayerNorm(hidden + emb.position_embeddings(tokens.positions))
        for layer in self._layers:
            hidden = self._layer(layer, hidden, groups)
        return hidden

    def _layer(self, layer: Any, hidden: Any, groups: list[_DeviceGroup]) -> Any:
        attention = layer.attention
        projections = attention.self
        heads = (hidden.shape[0], self._heads, self._head_size)
        context = self._attend(
            projections.query(hidden).view(heads),
            projections.key(hidden).view(heads),
            projections.value(hidden).view(heads),
            groups,
        )
        hidden = attention.output.LayerNorm(attention.output.dense(context) + hidden)
        inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
        return layer.output.LayerNorm(layer.output.dense(inner) + hidden)


class PackedGemma3(_PackedModel):
    """A transformers Gemma3TextModel with bidirectional attention (EmbeddingGemma) on packed
    tokens: the model's own embeddings, RMSNorms, rotary embeddings (global and local), projections
    and MLPs; attention with grouped-query heads and, on sliding layers, the bidirectional window."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

        config = model.config
        self._model = model
        self._rotate = apply_rotary_pos_emb
        self._layers = list(model.layers[: config.num_hidden_layers])
        self._head_dim = config.head_dim
        self.hidden = config.hidden_size
        self.padding_idx = config.pad_token_id or 0

    @classmethod
    def unsupported(cls, model: Any) -> str | None:
        config = getattr(model, "config", None)
        if not cls.runs_family_of(model) or not hasattr(model, "layers"):  # not a Gemma3TextModel
            return "not a Gemma3 text model"
        if not getattr(config, "use_bidirectional_attention", False):
            return "Gemma3 with causal attention"
        if getattr(config, "attn_logit_softcapping", None) is not None:
            return "attention logit soft-capping"
        return None

    def _forward(self, tokens: _DeviceTokens, groups: list[_DeviceGroup]) -> Any:
        model = self._model
        positions = tokens.positions[None]
        hidden = model.embed_tokens(tokens.ids)
        rotary_global = [x[0] for x in model.rotary_emb(hidden, positions)]
        rotary_local = [x[0] for x in model.rotary_emb_local(hidden, positions)]
        for layer in self._layers:
            attention = layer.self_attn
            cos, sin = rotary_local if attention.is_sliding else rotary_global
            normed = layer.input_layernorm(hidden)
            heads = (normed.shape[0], -1, self._head_dim)
            q = attention.q_norm(attention.q_proj(normed).view(heads))
            k = attention.k_norm(attention.k_proj(normed).view(heads))
            q, k = self._rotate(q, k, cos, sin, unsqueeze_dim=1)
            context = self._attend(
                q, k, attention.v_proj(normed).view(heads), groups,
                scale=attention.scaling, window=attention.sliding_window,
            )  # fmt: skip
            hidden = hidden + layer.post_attention_layernorm(attention.o_proj(context))
            mlp = layer.mlp(layer.pre_feedforward_layernorm(hidden))
            hidden = hidden + layer.post_feedforward_layernorm(mlp)
        return model.norm(hidden)


class PackedQwen3(_PackedModel):
    """A transformers Qwen3Model (Qwen3-Embedding) on packed tokens: the model's own embeddings,
    RMSNorms (q_norm/k_norm on each head), rotary embeddings, projections and MLPs; causal
    attention with grouped-query heads, as transformers' Qwen3Model computes for every config (4.57
    has no bidirectional Qwen3). Last-token pooling reads the grid this returns, where each row's
    last real token sits where it sat in the batch, whichever side it was padded on."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

        config = model.config
        self._model = model
        self._rotate = apply_rotary_pos_emb
        self._layers = list(model.layers[: config.num_hidden_layers])
        self._head_dim = self._layers[0].self_attn.head_dim
        self.hidden = config.hidden_size
        self.padding_idx = config.pad_token_id or 0

    @classmethod
    def unsupported(cls, model: Any) -> str | None:
        config = getattr(model, "config", None)
        if not cls.runs_family_of(model) or not hasattr(model, "layers"):  # not a Qwen3Model
            return "not a Qwen3 model"
        if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
            return "Qwen3 with sliding-window attention (use_sliding_window)"
        if getattr(config, "use_bidirectional_attention", False) or getattr(config, "is_causal", True) is False:
            # A fine-tune's config may ask for it, but transformers' Qwen3Model masks causally
            # regardless: packing causally would serve what the padded forward does only by accident.
            return "the config asks for bidirectional attention, which transformers' Qwen3Model does not run"
        return None

    def _forward(self, tokens: _DeviceTokens, groups: list[_DeviceGroup]) -> Any:
        model = self._model
        hidden = model.embed_tokens(tokens.ids)
        cos, sin = (x[0] for x in model.rotary_emb(hidden, tokens.positions[None]))
        for layer in self._layers:
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)
            heads = (normed.shape[0], -1, self._head_dim)
            q = attention.q_norm(attention.q_proj(normed).view(heads))
            k = attention.k_norm(attention.k_proj(normed).view(heads))
            q, k = self._rotate(q, k, cos, sin, unsqueeze_dim=1)
            v = attention.v_proj(normed).view(heads)
            context = self._attend(q, k, v, groups, scale=attention.scaling, causal=True)
            hidden = hidden + attention.o_proj(context)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return model.norm(hidden)


class PackedModernBert(_PackedModel):
    """A transformers ModernBertModel on packed tokens: the model's own embeddings, LayerNorms,
    fused QKV projections, gated MLPs and each layer's rotary embedding (one theta on global layers,
    another on local ones); bidirectional attention, over the whole text on every
    `global_attn_every_n_layers`-th layer and within ±`local_attention // 2` tokens on the others, as
    the model's sdpa and eager paths mask."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

        config = model.config
        self._model = model
        self._rotate = apply_rotary_pos_emb
        self._layers = list(model.layers)
        self._heads = config.num_attention_heads
        self.hidden = config.hidden_size
        self.padding_idx = config.pad_token_id or 0

    @classmethod
    def unsupported(cls, model: Any) -> str | None:
        config = getattr(model, "config", None)
        if not cls.runs_family_of(model) or not (hasattr(model, "layers") and hasattr(model, "embeddings")):
            return "not a ModernBERT model"
        if getattr(config, "_attn_implementation", None) == "flash_attention_2":
            return "ModernBERT with flash_attention_2 already runs unpadded"
        return None

    def _forward(self, tokens: _DeviceTokens, groups: list[_DeviceGroup]) -> Any:
        model = self._model
        embeddings = model.embeddings
        hidden = embeddings.norm(embeddings.tok_embeddings(tokens.ids))
        positions = tokens.positions[None]
        rotary: dict[bool, tuple[Any, Any]] = {}  # by whether the layer is local: one theta each
        for layer in self._layers:
            attention = layer.attn
            local = attention.local_attention != (-1, -1)
            qkv = attention.Wqkv(layer.attn_norm(hidden)).view(hidden.shape[0], 3, self._heads, -1)
            if local not in rotary:
                rotary[local] = tuple(x[0] for x in attention.rotary_emb(qkv, positions))
            q, k, v = qkv.unbind(dim=1)
            q, k = self._rotate(q, k, *rotary[local], unsqueeze_dim=1)
            window = attention.local_attention[0] + 1 if local else None  # the model's |i - j| <= local // 2
            hidden = hidden + attention.Wo(self._attend(q, k, v, groups, window=window))
            hidden = hidden + layer.mlp(layer.mlp_norm(hidden))
        return model.final_norm(hidden)


RUNNERS: dict[str, type[_PackedModel]] = {
    runner.__name__: runner for runner in (PackedEncoder, PackedGemma3, PackedQwen3, PackedModernBert)
}
"""The packed runners by the class names `Family.packed` gives."""


def _runner(model: Any) -> type[_PackedModel]:
    """The runner `model`'s family names; PackedEncoder for a family that does not pack, whose
    refusal names the families that do."""
    packed = family_of(getattr(getattr(model, "config", None), "model_type", None)).packed
    return RUNNERS[packed] if packed else PackedEncoder


def packing_unsupported(model: Any) -> str | None:
    """Why `model` (a transformers encoder) cannot run packed, or None when it can."""
    return _runner(model).unsupported(model)


def packed_model(model: Any) -> _PackedModel:
    """The packed runner for a transformers encoder (ValueError with the reason when there is none)."""
    return _runner(model)(model)


_CLASSIFIERS = {name: family for family in FAMILIES for name in family.classifiers}
"""Sequence-classification classes whose head reads the first token of the last hidden state
(`Family.classifiers`), with the family that lists them."""


def classifier_unsupported(model: Any) -> str | None:
    """Why `model` (a transformers sequence classifier) cannot run packed, or None when it can."""
    name = type(model).__name__
    if name not in _CLASSIFIERS:
        return f"{name} is not one of {', '.join(_CLASSIFIERS)}"
    return packing_unsupported(model.base_model)


class PackedClassifier:
    """A cross-encoder (BERT or (XLM-)RoBERTa sequence classification) run packed: its encoder on
    real tokens, then the model's own head on each pair's first token. Returns the logits."""

    def __init__(self, model: Any) -> None:
        reason = classifier_unsupported(model)
        if reason is not None:
            raise ValueError(f"cannot run this model packed: {reason}")
        self._model = model
        self._encoder = packed_model(model.base_model)
        self._pooler = _CLASSIFIERS[type(model).__name__].classifier_pooler

    def pack(self, arrays: dict[str, np.ndarray]) -> PackedBatch:
        return self._encoder.pack(arrays)

    def __call__(self, batch: PackedBatch, device: Any) -> Any:
        """Logits, [rows, labels] (call under inference_mode)."""
        hidden = self._encoder(batch, device)
        model = self._model
        if self._pooler:  # BertForSequenceClassification: pooler (first token) -> dropout -> classifier
            return model.classifier(model.dropout(model.base_model.pooler(hidden)))
        return model.classifier(hidden)  # RobertaClassificationHead takes the first token itself
