"""The registry: exactly the block matrices of every supported class are maskable, and every
block and head label agrees with what the class's own forward computes."""

import pytest
import torch

from bigram_subnetworks.architectures import (
    REGISTRY,
    Heads,
    block_slices,
    check_family,
    iter_blocks,
    maskable_parameters,
    model_unit_blocks,
    spec_for,
)
from bigram_subnetworks.masking import Mask, masked_forward

from conftest import LLAMA_LAYOUT_TYPES, MORE_ARCHS, make_llama_layout, make_tiny_model

EXPECTED_SUFFIXES = {
    "gpt_neox": {
        "attention.query_key_value.weight",
        "attention.dense.weight",
        "mlp.dense_h_to_4h.weight",
        "mlp.dense_4h_to_h.weight",
    },
    "gpt2": {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"},
    "llama": {
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    },
    "phi3": {
        "self_attn.qkv_proj.weight",
        "self_attn.o_proj.weight",
        "mlp.gate_up_proj.weight",
        "mlp.down_proj.weight",
    },
    "gptj": {
        "attn.q_proj.weight",
        "attn.k_proj.weight",
        "attn.v_proj.weight",
        "attn.out_proj.weight",
        "mlp.fc_in.weight",
        "mlp.fc_out.weight",
    },
    "opt": {
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.out_proj.weight",
        "fc1.weight",
        "fc2.weight",
    },
}


CLASSES = ["gpt_neox", "gpt2", *LLAMA_LAYOUT_TYPES, *MORE_ARCHS]


def _model(name: str, layers: int = 2):
    if name in REGISTRY and name != "llama":
        return make_tiny_model(name, layers=layers)
    return make_llama_layout(name, layers=layers)


@pytest.mark.parametrize("name", CLASSES)
def test_exactly_the_block_matrices_of_every_layer(name):
    model = _model(name, layers=3)
    spec = spec_for(model)
    names = list(maskable_parameters(model))
    prefix = spec.layers_path
    expected = {f"{prefix}.{i}.{s}" for i in range(3) for s in EXPECTED_SUFFIXES[spec.name]}
    assert set(names) == expected
    assert len(names) == len(EXPECTED_SUFFIXES[spec.name]) * 3
    # Nothing else: no embeddings, unembedding, norms (OLMo-2's and Qwen3's q/k norms included)
    # or biases (Qwen2's q/k/v biases stay unmasked).
    assert all(n.endswith(".weight") and model.get_parameter(n).dim() == 2 for n in names)
    assert not any("embed" in n or "wte" in n or "lm_head" in n or "norm" in n for n in names)
    biases = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    assert not set(biases) & set(names)
    if name == "qwen2":
        assert any(n.endswith("self_attn.q_proj.bias") for n in biases)


def test_unsupported_architecture_names_the_type_the_families_and_the_recipe():
    from transformers import BloomConfig, BloomForCausalLM

    model = BloomForCausalLM(BloomConfig(vocab_size=32, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(
        ValueError,
        match=r"unsupported architecture 'bloom'.*gpt_neox.*llama \(.*opt \(opt\); to add a "
        r"family, see 'Adding a model family' in docs/architecture\.md",
    ):
        spec_for(model)


def test_configured_family_is_checked_against_the_model_type():
    assert check_family("llama", "qwen2", "model q").name == "llama"
    with pytest.raises(ValueError, match=r"model q has model_type 'llama' \(family 'llama'\).*"):
        check_family("gpt_neox", "llama", "model q")
    with pytest.raises(ValueError, match=r"model q has model_type 'bert'.*supported are.*Adding"):
        check_family("gpt_neox", "bert", "model q")


@pytest.mark.parametrize("name", CLASSES)
def test_blocks_tile_every_matrix_exactly(name):
    model = _model(name)
    covered = {
        name: torch.zeros(w.shape, dtype=torch.int64)
        for name, w in maskable_parameters(model).items()
    }
    for param, piece in iter_blocks(model):
        covered[param][piece.rows, piece.cols] += 1
    assert all(bool((c == 1).all()) for c in covered.values())


@pytest.mark.parametrize("name", CLASSES)
def test_all_kept_mask_reproduces_the_logits_exactly(name):
    model = _model(name)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    full = Mask.full({n: w.shape for n, w in maskable_parameters(model).items()})
    torch.testing.assert_close(
        masked_forward(model, full.tensors, input_ids=ids).logits,
        model(input_ids=ids).logits,
        rtol=0,
        atol=0,
    )


def _output_projection_input(model, ids: torch.Tensor) -> torch.Tensor:
    """What layer 0's attention output projection (attn_o) receives: every head's attention
    output, as the class's own forward lays it out, [batch, pos, features]."""
    spec = spec_for(model)
    matrix = next(m for m in spec.matrices if m.parts[0].block == "attn_o")
    module = model.get_submodule(f"{spec.layers_path}.0.{matrix.path}")
    seen = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0]


def _features_of_head(model, head: int) -> set[int]:
    """The input features of layer 0's attn_o that the registry labels with ``head``."""
    spec = spec_for(model)
    for name, piece in iter_blocks(model):
        if piece.layer == 0 and piece.block == "attn_o" and piece.head == head:
            n = model.get_parameter(name).shape[0 if spec.transposed else 1]
            return set(range(n)[piece.rows if spec.transposed else piece.cols])
    raise AssertionError(f"no attn_o head {head}")


@pytest.mark.parametrize("name", CLASSES)
def test_head_labels_agree_with_the_class_attention(name):
    """Negate the weights the registry labels as one head's q, k or v (negation keeps any q/k
    norm unchanged) and see which attention outputs the class's own forward changes: exactly
    the features labelled as that head's attn_o input, or for a key/value head those of every
    query head it serves (grouped-query attention: query head h reads key/value head
    h // (query heads / key/value heads))."""
    model = _model(name)
    heads = Heads.of(model.config)
    group = heads.query // heads.key_value
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    before = _output_projection_input(model, ids)

    def group_of(kv_head: int) -> range:
        return range(kv_head * group, (kv_head + 1) * group)

    served = {"attn_q": lambda h: [h], "attn_k": group_of, "attn_v": group_of}
    checked = set()
    for param, piece in iter_blocks(model):
        if piece.layer != 0 or piece.block not in served:
            continue
        weight = model.get_parameter(param)
        with torch.no_grad():
            weight[piece.rows, piece.cols] *= -1
            after = _output_projection_input(model, ids)
            weight[piece.rows, piece.cols] *= -1
        changed = (after - before).abs().amax(dim=(0, 1)) > 1e-5
        readers = served[piece.block](piece.head)
        expected = set().union(*(_features_of_head(model, h) for h in readers))
        assert set(torch.nonzero(changed).flatten().tolist()) == expected, (piece.block, piece.head)
        checked.add(piece.block)
    assert checked == {"attn_q", "attn_k", "attn_v"}


def test_neox_qkv_labels_follow_the_per_head_interleaving():
    """GPT-NeoX's fused QKV is [heads, (q, k, v), head_dim] along the rows, not thirds."""
    model = make_tiny_model("gpt_neox")
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    weight = model.get_parameter(name)
    head_size = model.gpt_neox.layers[0].attention.head_size
    for piece in block_slices(spec_for(model), name, weight.shape, Heads(4, 4)):
        rows = range(weight.shape[0])[piece.rows]
        offset = {"attn_q": 0, "attn_k": 1, "attn_v": 2}[piece.block]
        assert rows.start == (3 * piece.head + offset) * head_size


def test_gpt2_qkv_labels_are_column_thirds():
    model = make_tiny_model("gpt2")
    name = "transformer.h.0.attn.c_attn.weight"
    weight = model.get_parameter(name)
    hidden = weight.shape[0]
    for piece in block_slices(spec_for(model), name, weight.shape, Heads(4, 4)):
        cols = range(weight.shape[1])[piece.cols]
        third = {"attn_q": 0, "attn_k": 1, "attn_v": 2}[piece.block]
        assert cols.start == third * hidden + piece.head * (hidden // 4)


def test_llama_layout_has_fewer_key_value_heads_and_a_gate_block():
    model = make_llama_layout("llama")
    labels = {(p.block, p.head) for _, p in iter_blocks(model) if p.layer == 0}
    assert {h for b, h in labels if b == "attn_q"} == {0, 1, 2, 3}
    assert {h for b, h in labels if b in ("attn_k", "attn_v")} == {0, 1}
    assert {b for b, h in labels if h is None} == {"mlp_gate", "mlp_in", "mlp_out"}


@pytest.mark.parametrize("name", ["gpt_neox", "gpt2", "llama", "gemma", *MORE_ARCHS])
def test_unit_blocks_tile_every_matrix_and_agree_with_block_slices(name):
    """Every stored entry is in exactly one unit block; each head's run of the unit view holds
    exactly the entries `block_slices` labels with that block and head."""
    model = _model(name)
    spec = spec_for(model)
    heads = Heads.of(model.config)
    seen = {}
    for block in model_unit_blocks(model):
        numel = block.shape[0] * block.shape[1]
        index = torch.arange(numel).view(block.shape)
        view = block.view(index)  # [units, inputs] of flat stored positions
        assert tuple(view.shape) == block.view_shape
        seen.setdefault(block.name, []).append(view.flatten())
        pieces = [
            p for p in block_slices(spec, block.name, torch.Size(block.shape), heads)
            if p.block == block.block
        ]  # fmt: skip
        if block.head_axis is None:  # an MLP block: all of its matrix, or its part of a fused one
            assert len(pieces) == 1
            labelled = index[pieces[0].rows, pieces[0].cols].flatten().tolist()
            assert set(view.flatten().tolist()) == set(labelled)
            continue
        assert block.num_heads == len(pieces)
        for piece in pieces:
            run = view.shape[block.head_axis] // block.num_heads
            mine = view.narrow(block.head_axis, piece.head * run, run)
            labelled = index[piece.rows, piece.cols].flatten().tolist()
            assert set(mine.flatten().tolist()) == set(labelled)
    for param, parts in seen.items():
        flat = torch.cat(parts).sort().values
        assert torch.equal(flat, torch.arange(model.get_parameter(param).numel()))


@pytest.mark.parametrize("name", ["gpt_neox", "gpt2", "llama", *MORE_ARCHS])
def test_unit_views_put_output_units_on_rows(name):
    """Row i of a unit view is what output unit i computes from: for GPT-2's Conv1D (in, out)
    the transpose, for (out, in) Linear weights the weight itself."""
    model = _model(name)
    spec = spec_for(model)
    for block in model_unit_blocks(model):
        weight = model.get_parameter(block.name)
        if block.rows == block.cols == (slice(None),):  # the whole matrix: MLP and attn_o
            expected = weight.T if spec.transposed else weight
            assert torch.equal(block.view(weight), expected)
            assert block.view_shape[0] == weight.shape[1 if spec.transposed else 0]
        # No copy wherever the block is one slice of the stored tensor (all but NeoX q/k/v).
        shares = block.view(weight).untyped_storage().data_ptr() == (
            weight.untyped_storage().data_ptr()
        )
        assert shares == (len(block.rows) == len(block.cols) == 1)
        assert shares or (name == "gpt_neox" and block.block in ("attn_q", "attn_k", "attn_v"))


@pytest.mark.parametrize("name", CLASSES)
def test_the_fp32_unembedding_path_computes_each_class_logits(name):
    """Under autocast the logits come from the class's transformer (`base_model`) and its
    unembedding run separately (`runtime._FullPrecisionUnembedding`); without autocast that path
    must give exactly what the class's own forward gives."""
    from bigram_subnetworks.runtime import _FullPrecisionUnembedding

    model = _model(name)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(
            _FullPrecisionUnembedding(model)(ids), model(input_ids=ids).logits, rtol=0, atol=0
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", CLASSES)
def test_a_half_precision_model_of_every_class_trains_and_comes_back_unchanged(name, dtype):
    """bf16 and fp16 checkpoints (as most of these families publish) through the library's
    training and evaluation: the model is widened for the call and restored bit-identical."""
    from bigram_subnetworks import evaluate_subnetwork, find_bigram_subnetwork

    model = _model(name).to(dtype)
    before = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    tokens = torch.randint(0, 64, (32, 12), generator=torch.Generator().manual_seed(0)).numpy()
    found = find_bigram_subnetwork(
        model, tokens=tokens, vocab_size=64, lam=1.0, learning_rate=0.1, beta_growth=1.05,
        max_steps=3, batch_size=8, progress=False,
    )  # fmt: skip
    metrics = evaluate_subnetwork(model, found, tokens=tokens[:8], progress=False)
    assert 0 < found.mask.density <= 1 and -1 <= metrics["r_clip_inf"] <= 1
    after = model.state_dict()
    assert all(after[k].dtype == dtype and torch.equal(after[k], t) for k, t in before.items())
