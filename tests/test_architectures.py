"""The registry matches exactly the four block matrices per layer, and labels blocks correctly."""

import pytest
import torch

from bigram_subnetworks.architectures import (
    block_slices,
    iter_blocks,
    maskable_parameters,
    model_unit_blocks,
    spec_for,
)

from conftest import make_tiny_model

EXPECTED_SUFFIXES = {
    "gpt_neox": {
        "attention.query_key_value.weight",
        "attention.dense.weight",
        "mlp.dense_h_to_4h.weight",
        "mlp.dense_4h_to_h.weight",
    },
    "gpt2": {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"},
}


def test_exactly_four_block_matrices_per_layer(arch):
    model = make_tiny_model(arch, layers=3)
    names = list(maskable_parameters(model))
    assert len(names) == 4 * 3
    prefix = "gpt_neox.layers" if arch == "gpt_neox" else "transformer.h"
    expected = {f"{prefix}.{i}.{s}" for i in range(3) for s in EXPECTED_SUFFIXES[arch]}
    assert set(names) == expected
    # Nothing else: no embeddings, unembedding (lm_head), LayerNorms or biases.
    assert not any("embed" in n or "wte" in n or "lm_head" in n or "ln" in n for n in names)
    assert all(n.endswith(".weight") and model.get_parameter(n).dim() == 2 for n in names)


def test_unsupported_architecture_is_named():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(ValueError, match="unsupported architecture 'llama'"):
        spec_for(model)


def test_blocks_tile_every_matrix_exactly(arch):
    model = make_tiny_model(arch)
    covered = {
        name: torch.zeros(w.shape, dtype=torch.int64)
        for name, w in maskable_parameters(model).items()
    }
    for name, piece in iter_blocks(model):
        covered[name][piece.rows, piece.cols] += 1
    assert all(bool((c == 1).all()) for c in covered.values())


def test_neox_qkv_labels_follow_the_per_head_interleaving():
    """Set Q, K, V of each head by hand through the model's own forward split, then check the
    registry labels the rows it writes to with the right block and head."""
    model = make_tiny_model("gpt_neox")
    attention = model.gpt_neox.layers[0].attention
    heads, head_size = 4, attention.head_size
    weight = attention.query_key_value.weight
    spec = spec_for(model)
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    # The model's own view: output features reshaped to [heads, 3 * head_size], chunked q | k | v.
    marker = torch.arange(weight.shape[0]).view(heads, 3 * head_size)
    q, k, v = marker.chunk(3, dim=-1)
    truth = {}
    for block, part in zip(("attn_q", "attn_k", "attn_v"), (q, k, v), strict=True):
        for h in range(heads):
            truth[(block, h)] = set(part[h].tolist())
    for piece in block_slices(spec, name, weight.shape, heads):
        rows = set(range(weight.shape[0])[piece.rows])
        assert rows == truth[(piece.block, piece.head)]


def test_gpt2_qkv_labels_are_column_thirds():
    model = make_tiny_model("gpt2")
    name = "transformer.h.0.attn.c_attn.weight"
    weight = model.get_parameter(name)
    hidden = weight.shape[0]
    pieces = block_slices(spec_for(model), name, weight.shape, 4)
    for piece in pieces:
        cols = range(weight.shape[1])[piece.cols]
        third = {"attn_q": 0, "attn_k": 1, "attn_v": 2}[piece.block]
        assert cols.start == third * hidden + piece.head * (hidden // 4)


def test_unit_blocks_tile_every_matrix_and_agree_with_block_slices(arch):
    """Every stored entry is in exactly one unit block; each head's run of the unit view holds
    exactly the entries `block_slices` labels with that block and head."""
    model = make_tiny_model(arch)
    spec = spec_for(model)
    seen = {}
    for block in model_unit_blocks(model):
        numel = block.shape[0] * block.shape[1]
        index = torch.arange(numel).view(block.shape)
        view = block.view(index)  # [units, inputs] of flat stored positions
        assert tuple(view.shape) == block.view_shape
        seen.setdefault(block.name, []).append(view.flatten())
        pieces = [
            p for p in block_slices(spec, block.name, torch.Size(block.shape), 4)
            if p.block == block.block
        ]  # fmt: skip
        if block.head_axis is None:
            assert len(pieces) == 1 and set(view.flatten().tolist()) == set(range(numel))
            continue
        for piece in pieces:
            run = view.shape[block.head_axis] // block.num_heads
            mine = view.narrow(block.head_axis, piece.head * run, run)
            labelled = index[piece.rows, piece.cols].flatten().tolist()
            assert set(mine.flatten().tolist()) == set(labelled)
    for name, parts in seen.items():
        flat = torch.cat(parts).sort().values
        assert torch.equal(flat, torch.arange(model.get_parameter(name).numel()))


def test_unit_views_put_output_units_on_rows(arch):
    """Row i of a unit view is what output unit i computes from: for GPT-2's Conv1D (in, out)
    the transpose, for GPT-NeoX's Linear (out, in) the weight itself; q/k/v have hidden units."""
    model = make_tiny_model(arch)
    hidden = model.config.hidden_size
    for block in model_unit_blocks(model):
        weight = model.get_parameter(block.name)
        units = {"mlp_in": 64, "mlp_out": hidden}.get(block.block, hidden)
        assert block.view_shape[0] == units
        if block.block.startswith("mlp") or block.block == "attn_o":
            expected = weight.T if arch == "gpt2" else weight
            assert torch.equal(block.view(weight), expected)
        # No copy wherever the block is one slice of the stored tensor (all but NeoX q/k/v).
        shares = block.view(weight).untyped_storage().data_ptr() == (
            weight.untyped_storage().data_ptr()
        )
        assert shares == (len(block.rows) == len(block.cols) == 1)
        assert shares or (arch == "gpt_neox" and block.block in ("attn_q", "attn_k", "attn_v"))
