"""The only place that knows model internals: which weights are maskable and how to label them.

Paper-spec §3: only the 2-D weight matrices inside transformer blocks are masked; embeddings, the
unembedding, LayerNorms and biases are always kept. Patterns are anchored (``fullmatch``) because a
substring filter such as "not 'embed'" silently masks GPT-NeoX's ``lm_head`` in transformers 5.
"""

from __future__ import annotations

import os
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
    """Per-architecture facts. ``kinds`` maps a weight's role to its anchored name pattern;
    ``blocks_path`` and ``final_norm_path`` locate the transformer blocks and the final LayerNorm
    (the residual-stream hooks, paper-spec §7)."""

    name: str
    model_type: str
    kinds: dict[str, re.Pattern[str]]
    blocks_path: str
    final_norm_path: str

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
    blocks_path="gpt_neox.layers",
    final_norm_path="gpt_neox.final_layer_norm",
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
    blocks_path="transformer.h",
    final_norm_path="transformer.ln_f",
)
REGISTRY: dict[str, ArchSpec] = {spec.name: spec for spec in (GPT_NEOX, GPT2)}


def spec_for(model: nn.Module) -> ArchSpec:
    """The registry entry for a Hugging Face model, by its config's ``model_type``."""
    return spec_for_config(getattr(model, "config", None))


def spec_for_config(config) -> ArchSpec:
    """The registry entry for a Hugging Face model config (no weights needed)."""
    model_type = getattr(config, "model_type", None)
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


def num_heads(config) -> int:
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
    heads = num_heads(model.config)
    for name, weight in maskable_parameters(model).items():
        for piece in block_slices(spec, name, weight.shape, heads):
            yield name, piece


@dataclass(frozen=True)
class UnitBlock:
    """One weight block (paper-spec §6) seen as a matrix whose rows are output units.

    ``view(t)`` is ``t[rows][:, cols]`` with the listed slices concatenated in order, transposed
    when the weight is stored as (in, out) (GPT-2 Conv1D): a [units, inputs] matrix. Heads, where a
    block has them, are consecutive runs of equal length along ``head_axis`` of that view, in head
    order: the output units for q/k/v (axis 0), the input features for attn_o (axis 1).
    """

    name: str
    layer: int
    block: str
    shape: tuple[int, int]  # the stored tensor's shape
    rows: tuple[slice, ...]
    cols: tuple[slice, ...]
    transpose: bool
    head_axis: int | None
    num_heads: int | None

    @property
    def view_shape(self) -> tuple[int, int]:
        """[units, inputs]."""
        stored = (_length(self.rows, self.shape[0]), _length(self.cols, self.shape[1]))
        return (stored[1], stored[0]) if self.transpose else stored

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """[units, inputs] view of a stored tensor; a copy only where pieces are not contiguous."""
        if tuple(tensor.shape) != self.shape:
            raise ValueError(
                f"{self.name!r} has shape {tuple(tensor.shape)}, its {self.block} block expects "
                f"{self.shape}"
            )
        out = _gather(_gather(tensor, self.rows, 0), self.cols, 1)
        return out.T if self.transpose else out


def _length(pieces: tuple[slice, ...], size: int) -> int:
    return sum(len(range(size)[piece]) for piece in pieces)


def _gather(tensor: torch.Tensor, pieces: tuple[slice, ...], dim: int) -> torch.Tensor:
    if len(pieces) == 1:  # a plain slice: a view, no copy
        return tensor[pieces[0]] if dim == 0 else tensor[:, pieces[0]]
    size = tensor.shape[dim]
    index = torch.cat([torch.arange(size)[piece] for piece in pieces])
    return tensor.index_select(dim, index)  # 8x faster than torch.cat on bool (measured)


def _merge(pieces: list[slice], size: int) -> tuple[slice, ...]:
    """Join slices that continue each other (GPT-2's per-head columns form one third)."""
    merged: list[range] = []
    for piece in pieces:
        span = range(size)[piece]
        if merged and merged[-1].stop == span.start:
            merged[-1] = range(merged[-1].start, span.stop)
        else:
            merged.append(span)
    return tuple(slice(span.start, span.stop) for span in merged)


def unit_blocks(spec: ArchSpec, name: str, shape: torch.Size, num_heads: int) -> list[UnitBlock]:
    """The output-unit blocks (attn_q/k/v/o, mlp_in/out) of one maskable matrix.

    Built from `block_slices`, so the per-head layout has one source: a block's per-head pieces
    are joined in head order along the axis they split. GPT-2 Conv1D weights are stored (in, out),
    so their view is transposed to put output units on the rows; GPT-NeoX's q rows are gathered
    from every head's [q, k, v] group.
    """
    shape = (int(shape[0]), int(shape[1]))
    transpose = spec.name == "gpt2"  # Conv1D: (in, out)
    pieces = block_slices(spec, name, torch.Size(shape), num_heads)
    out = []
    for block in dict.fromkeys(piece.block for piece in pieces):
        mine = sorted((p for p in pieces if p.block == block), key=lambda p: p.head or 0)
        every = (slice(None),)
        if block in MLP_BLOCKS:  # the whole matrix, no heads
            rows, cols, axis, heads = every, every, None, None
        elif all(p.rows == slice(None) for p in mine):  # heads split the stored columns
            rows, cols, axis, heads = every, _merge([p.cols for p in mine], shape[1]), 1, len(mine)
        else:  # heads split the stored rows
            rows, cols, axis, heads = _merge([p.rows for p in mine], shape[0]), every, 0, len(mine)
        if axis is not None and transpose:
            axis = 1 - axis
        out.append(UnitBlock(name, mine[0].layer, block, shape, rows, cols, transpose, axis, heads))
    return out


def unit_blocks_for_shapes(
    spec: ArchSpec, shapes: dict[str, torch.Size], num_heads: int
) -> list[UnitBlock]:
    """Output-unit blocks for every matrix of a mask (``Mask.shapes``); no model weights needed."""
    return [
        block
        for name, shape in shapes.items()
        for block in unit_blocks(spec, name, shape, num_heads)
    ]


def model_unit_blocks(model: nn.Module) -> list[UnitBlock]:
    """Output-unit blocks for every maskable matrix of a Hugging Face model."""
    shapes = {name: weight.shape for name, weight in maskable_parameters(model).items()}
    return unit_blocks_for_shapes(spec_for(model), shapes, num_heads(model.config))


def checkpoint_unit_blocks(
    model_dir: str | os.PathLike, shapes: dict[str, torch.Size]
) -> list[UnitBlock]:
    """Output-unit blocks of a mask's matrices for the model saved in ``model_dir``, from its
    config alone (the weights are not loaded)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    return unit_blocks_for_shapes(spec_for_config(config), shapes, num_heads(config))
