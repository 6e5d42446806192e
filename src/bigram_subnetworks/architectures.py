"""The only place that knows model internals: which weights are maskable and how to label them.

Paper-spec §3: only the 2-D weight matrices inside transformer blocks are masked; embeddings, the
unembedding, LayerNorms and biases are always kept. Patterns are anchored (``fullmatch``) because a
substring filter such as "not 'embed'" silently masks GPT-NeoX's ``lm_head`` in transformers 5.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

ATTENTION_BLOCKS = ("attn_q", "attn_k", "attn_v", "attn_o")
MLP_BLOCKS = ("mlp_in", "mlp_out")
BLOCKS = ATTENTION_BLOCKS + MLP_BLOCKS


@dataclass(frozen=True)
class BlockSlice:
    """One labelled piece of a maskable matrix: rows × columns of the stored tensor."""

    layer: int
    block: str
    head: int | None
    rows: slice
    cols: slice


@dataclass(frozen=True)
class ArchSpec:
    """Per-architecture facts. ``kinds`` maps a weight's role to its anchored name pattern."""

    name: str
    model_type: str
    kinds: dict[str, re.Pattern[str]]

    def match(self, name: str) -> tuple[int, str] | None:
        """(layer, kind) for a maskable parameter name, None for everything else."""
        for kind, pattern in self.kinds.items():
            found = pattern.fullmatch(name)
            if found:
                return int(found["layer"]), kind
        return None


def _patterns(prefix: str, **kinds: str) -> dict[str, re.Pattern[str]]:
    return {
        kind: re.compile(rf"{prefix}\.(?P<layer>\d+)\.{re.escape(suffix)}\.weight")
        for kind, suffix in kinds.items()
    }


GPT_NEOX = ArchSpec(
    name="gpt_neox",
    model_type="gpt_neox",
    kinds=_patterns(
        r"gpt_neox\.layers",
        qkv="attention.query_key_value",
        attn_o="attention.dense",
        mlp_in="mlp.dense_h_to_4h",
        mlp_out="mlp.dense_4h_to_h",
    ),
)
GPT2 = ArchSpec(
    name="gpt2",
    model_type="gpt2",
    kinds=_patterns(
        r"transformer\.h",
        qkv="attn.c_attn",
        attn_o="attn.c_proj",
        mlp_in="mlp.c_fc",
        mlp_out="mlp.c_proj",
    ),
)
REGISTRY: dict[str, ArchSpec] = {spec.name: spec for spec in (GPT_NEOX, GPT2)}


def spec_for(model: nn.Module) -> ArchSpec:
    """The registry entry for a Hugging Face model, by its config's ``model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for spec in REGISTRY.values():
        if spec.model_type == model_type:
            return spec
    raise ValueError(f"unsupported architecture {model_type!r}: supported are {sorted(REGISTRY)}")


def maskable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name → weight tensor for every maskable matrix, in the model's parameter order."""
    spec = spec_for(model)
    found = {name: p for name, p in model.named_parameters() if spec.match(name) is not None}
    if not found:
        raise ValueError(f"no maskable weights found in {type(model).__name__}")
    return found


def _num_heads(config) -> int:
    return int(getattr(config, "num_attention_heads", None) or config.n_head)


def block_slices(spec: ArchSpec, name: str, shape: torch.Size, num_heads: int) -> list[BlockSlice]:
    """Split one maskable matrix into labelled blocks (per head for attention).

    GPT-NeoX stores QKV as [heads, (q, k, v), head_dim] along the output rows (interleaved per
    head, not contiguous thirds: the reference code's labels were wrong there). GPT-2's Conv1D
    stores weights as (in, out) with q | k | v in column thirds, and per-head output columns.
    """
    matched = spec.match(name)
    if matched is None:
        raise ValueError(f"{name!r} is not a maskable {spec.name} weight")
    layer, kind = matched
    rows, cols = shape
    every = slice(None)
    if kind in MLP_BLOCKS:
        return [BlockSlice(layer, kind, None, every, every)]
    if spec.name == "gpt_neox":
        head_dim = rows // (3 * num_heads) if kind == "qkv" else cols // num_heads
        if kind == "attn_o":  # dense: (hidden, hidden), input columns grouped by head
            return [
                BlockSlice(layer, "attn_o", h, every, slice(h * head_dim, (h + 1) * head_dim))
                for h in range(num_heads)
            ]
        return [
            BlockSlice(layer, qkv, h, slice(start, start + head_dim), every)
            for h in range(num_heads)
            for i, qkv in enumerate(ATTENTION_BLOCKS[:3])
            for start in [(3 * h + i) * head_dim]
        ]
    hidden = cols // 3 if kind == "qkv" else rows
    head_dim = hidden // num_heads
    if kind == "attn_o":  # c_proj: (in, out), input rows grouped by head
        return [
            BlockSlice(layer, "attn_o", h, slice(h * head_dim, (h + 1) * head_dim), every)
            for h in range(num_heads)
        ]
    return [
        BlockSlice(layer, qkv, h, every, slice(start, start + head_dim))
        for i, qkv in enumerate(ATTENTION_BLOCKS[:3])
        for h in range(num_heads)
        for start in [i * hidden + h * head_dim]
    ]


def iter_blocks(model: nn.Module) -> Iterator[tuple[str, BlockSlice]]:
    """(parameter name, block) for every labelled block of every maskable matrix of a model."""
    spec = spec_for(model)
    heads = _num_heads(model.config)
    for name, weight in maskable_parameters(model).items():
        for piece in block_slices(spec, name, weight.shape, heads):
            yield name, piece
