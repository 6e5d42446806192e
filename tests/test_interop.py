"""Masks leave this package intact: as the authors' pickle (read back by our importer and by a
faithful re-implementation of their loaders), as per-head and per-neuron tables (checked against
the models' own attention and MLP layouts, not the registry they are built from), as a model with
the zeros written in, and through TransformerLens and nnsight (skipped when not installed)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bigram_subnetworks.architectures import iter_blocks, maskable_parameters, spec_for
from bigram_subnetworks.interop import (
    export_released,
    head_view,
    masked_copy,
    neuron_view,
    to_mask_dict,
    to_nnsight,
    to_transformer_lens,
)
from bigram_subnetworks.lens import residual_hooks
from bigram_subnetworks.masking import Mask, apply_mask
from bigram_subnetworks.released import load_released_mask
from bigram_subnetworks.tokenizer import train_bpe

from conftest import VOCAB, make_tiny_model

# Each family's MLP modules, spelled here and not read from the registry: the oracle for the
# per-neuron view. (layers path, {block: module under a layer}).
MLP_MODULES = {
    "gpt2": ("transformer.h", {"mlp_in": "mlp.c_fc", "mlp_out": "mlp.c_proj"}),
    "gpt_neox": (
        "gpt_neox.layers",
        {"mlp_in": "mlp.dense_h_to_4h", "mlp_out": "mlp.dense_4h_to_h"},
    ),
    "llama": (
        "model.layers",
        {"mlp_gate": "mlp.gate_proj", "mlp_in": "mlp.up_proj", "mlp_out": "mlp.down_proj"},
    ),
}
# What TransformerLens's weight processing does to masked-out zeros, per family: LayerNorm models
# have their block weights centred (fold_ln, center_writing_weights), RMSNorm models only scaled.
ZEROS_SURVIVE_PROCESSING = {"gpt2": False, "gpt_neox": False, "llama": True}


def random_mask(model: nn.Module, seed: int = 0, density: float = 0.3) -> Mask:
    generator = torch.Generator().manual_seed(seed)
    return Mask(
        {
            name: torch.rand(weight.shape, generator=generator) < density
            for name, weight in maskable_parameters(model).items()
        }
    )


def token_ids(vocab_size: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def masked_logits(model: nn.Module, mask: Mask, ids: torch.Tensor) -> torch.Tensor:
    with apply_mask(model, mask):
        return logits_of(model, ids)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- the authors' pickle format ----------------------------------------------------------------


class RecordingUnpickler(pickle.Unpickler):
    """Plain unpickling (our own files only) that records which globals a file names."""

    def __init__(self, handle) -> None:
        super().__init__(handle)
        self.globals: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):
        self.globals.add((module, name))
        return super().find_class(module, name)


def load_plain(path) -> tuple[dict, set[tuple[str, str]]]:
    with open(path, "rb") as handle, warnings.catch_warnings():
        # NumPy 2 resolves NumPy 1.x's numpy.core paths with a DeprecationWarning.
        warnings.simplefilter("ignore", DeprecationWarning)
        unpickler = RecordingUnpickler(handle)
        return unpickler.load(), unpickler.globals


@pytest.mark.parametrize("numpy1_compatible", [False, True], ids=["numpy-now", "numpy1"])
def test_export_is_get_mask_dicts_format_and_reimports(arch, tmp_path, numpy1_compatible):
    model = make_tiny_model(arch)
    mask = random_mask(model)
    path = export_released(
        mask,
        tmp_path / "subnetwork_dict_lambda1e1.pickle",
        "EleutherAI/pythia-70m",
        model=model,
        numpy1_compatible=numpy1_compatible,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left over
    data, names = load_plain(path)
    # get_mask_dict: the weights in sorted order, then the model name.
    assert list(data) == [*sorted(mask.tensors), "orig_model_name"]
    assert data["orig_model_name"] == "EleutherAI/pythia-70m"
    for name, tensor in mask.tensors.items():
        array = data[name]
        assert type(array) is np.ndarray and array.dtype == np.bool_
        assert array.shape == tuple(tensor.shape) and array.flags.c_contiguous
        assert array.flags.writeable  # their set_attention_head / set_layer write into them
        assert np.array_equal(array, tensor.numpy())
    frombuffer = "numpy.core.numeric" if numpy1_compatible else np._core.numeric.__name__
    assert names == {(frombuffer, "_frombuffer"), ("numpy", "dtype")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        back = load_released_mask(path, model)
    assert back.equals(mask)


def their_load_subnetwork_model(model_name: str, mask_dict: dict) -> nn.Module:
    """circuit_loading_utils.load_subnetwork_model, as the authors wrote it, minus the tokenizer
    (tiny models have none): from_pretrained, then every entry but orig_model_name multiplies the
    state-dict tensor of that name (a KeyError for a name the model lacks) by the numpy array,
    and load_state_dict (strict) puts the products back."""
    model = AutoModelForCausalLM.from_pretrained(model_name)
    AutoConfig.from_pretrained(model_name)
    state_dict = model.state_dict()
    with warnings.catch_warnings():  # torch * ndarray goes through numpy's __array_wrap__
        warnings.simplefilter("ignore", DeprecationWarning)
        for layer_name, mask in mask_dict.items():
            if layer_name == "orig_model_name":
                continue
            state_dict[layer_name] = state_dict[layer_name] * mask
    model.load_state_dict(state_dict)
    return model.eval()


def their_select_layers(layer_names: list[str], model_type: str) -> list[str]:
    """paper_code/utils/circuit_utils.select_layers for their two model types."""
    if model_type == "gpt2":
        keep = [n for n in layer_names if ".h." in n and "weight" in n and "ln" not in n]
    else:  # pythia
        keep = [
            n
            for n in layer_names
            if "embed" not in n
            and "weight" in n
            and "layernorm" not in n
            and "final_layer_norm" not in n
        ]
    return [".".join(n.split(".")[:-1]) for n in keep]


@pytest.mark.parametrize("numpy1_compatible", [False, True], ids=["numpy-now", "numpy1"])
def test_the_authors_loader_runs_an_exported_mask(arch, tmp_path, numpy1_compatible):
    """orig_model_name (here a local directory) gets their loader the base model back, and the
    masked model it builds is ours: equal logits, bit for bit."""
    model = make_tiny_model(arch)
    model.save_pretrained(tmp_path / "base")
    mask = random_mask(model, seed=1)
    path = export_released(
        mask, tmp_path / "m.pickle", str(tmp_path / "base"), numpy1_compatible=numpy1_compatible
    )
    mask_dict, _ = load_plain(path)
    theirs = their_load_subnetwork_model(mask_dict["orig_model_name"], mask_dict)
    ids = token_ids()
    expected = masked_logits(model, mask, ids)
    assert not torch.allclose(expected, logits_of(model, ids), atol=1e-3)  # the mask matters
    assert torch.equal(logits_of(theirs, ids), expected)


# What their select_layers picks beyond the maskable weights under transformers 5: GPT-NeoX's
# unembedding, `embed_out` (filtered out by "embed") when they wrote it, is now `lm_head`. Neither
# their released masks nor ours hold it (the paper never masks the unembedding), so their
# load_circuit_model raises KeyError('lm_head.weight') on a Pythia mask under transformers 5.
THEIR_EXTRA_TARGETS = {"gpt2": set(), "pythia": {"lm_head.weight"}}


@pytest.mark.parametrize(("arch", "model_type"), [("gpt2", "gpt2"), ("gpt_neox", "pythia")])
def test_the_authors_paper_loader_finds_every_weight_it_masks(tmp_path, arch, model_type):
    """circuit_utils.load_circuit_model indexes the dict by every layer its select_layers picks
    from the state dict: those are exactly our exported weights (but for the unembedding that
    transformers 5 renamed, see THEIR_EXTRA_TARGETS), and masking them gives our masked model."""
    model = make_tiny_model(arch)
    mask = random_mask(model, seed=2)
    circuit_dict, _ = load_plain(export_released(mask, tmp_path / "m.pickle", "base"))
    state_dict = model.state_dict()
    targets = {f"{layer}.weight" for layer in their_select_layers(list(state_dict), model_type)}
    assert targets - set(mask.tensors) == THEIR_EXTRA_TARGETS[model_type]
    assert set(mask.tensors) <= targets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for key in sorted(targets - THEIR_EXTRA_TARGETS[model_type]):
            state_dict[key] = state_dict[key].cpu() * circuit_dict[key]
    theirs = make_tiny_model(arch)
    theirs.load_state_dict(state_dict)
    ids = token_ids()
    assert torch.equal(logits_of(theirs, ids), masked_logits(model, mask, ids))


def test_export_refusals_name_the_problem(tmp_path):
    gpt2, neox = make_tiny_model("gpt2"), make_tiny_model("gpt_neox")
    mask = random_mask(gpt2)
    with pytest.raises(ValueError, match="model_name must name the base model"):
        export_released(mask, tmp_path / "m.pickle", "  ")
    with pytest.raises(ValueError, match=r"export_released: weight 'transformer\.h\.0.*not in the"):
        export_released(mask, tmp_path / "m.pickle", "gpt2", model=neox)
    partial = Mask(dict(list(mask.tensors.items())[1:]))
    with pytest.raises(ValueError, match=r"cover exactly .* \(missing: \['transformer.h.0.attn"):
        export_released(partial, tmp_path / "m.pickle", "gpt2", model=gpt2)
    assert not list(tmp_path.iterdir())


def test_mask_dict_is_a_copy_their_helpers_can_edit():
    """Their set_layer writes into the arrays (mask_dict[k][:, :] = to_keep): our Mask stays."""
    mask = random_mask(make_tiny_model("gpt2"))
    kept = mask.n_kept
    mask_dict = to_mask_dict(mask, "openai-community/gpt2")
    assert list(mask_dict) == [*sorted(mask.tensors), "orig_model_name"]
    for name, array in mask_dict.items():
        if name != "orig_model_name":
            array[:, :] = True
    assert mask.n_kept == kept


def test_export_writes_non_contiguous_tensors_in_c_order(tmp_path):
    """A mask tensor may be a transposed view; the file holds it as the weight's C-order array."""
    view = (torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) < 0.5).T
    assert not view.is_contiguous()
    for numpy1_compatible in (False, True):
        path = export_released(
            Mask({"w.weight": view}),
            tmp_path / "m.pickle",
            "m",
            numpy1_compatible=numpy1_compatible,
        )
        array = load_plain(path)[0]["w.weight"]
        assert array.flags.c_contiguous and np.array_equal(array, view.numpy())


# --- per-head and per-neuron views -------------------------------------------------------------


def test_views_account_for_every_mask_entry(arch):
    model = make_tiny_model(arch)
    mask = random_mask(model, seed=3)
    heads, neurons = head_view(mask, model), neuron_view(mask, model)
    assert heads["kept"].sum() + neurons["kept"].sum() == mask.n_kept
    assert heads["total"].sum() + neurons["total"].sum() == mask.n_total
    per_tensor = mask.per_tensor()
    by_weight = heads.groupby("weight")[["kept", "total"]].sum()
    for name, row in by_weight.iterrows():
        assert (row["kept"], row["total"]) == per_tensor[name]
    mlp_weights = {
        (p.layer, p.block): n for n, p in iter_blocks(model) if p.block.startswith("mlp")
    }
    assert set(per_tensor) == set(by_weight.index) | set(mlp_weights.values())
    for (layer, block), name in mlp_weights.items():
        rows = neurons[neurons["layer"] == layer]
        assert (int(rows[f"{block}_kept"].sum()), int(rows[f"{block}_total"].sum())) == (
            per_tensor[name]
        )
    config = model.config
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    assert len(heads) == config.num_hidden_layers * 2 * (config.num_attention_heads + kv)
    units = getattr(config, "intermediate_size", None) or config.n_inner or 4 * config.n_embd
    assert len(neurons) == config.num_hidden_layers * units
    assert np.allclose(neurons["fraction"], neurons["kept"] / neurons["total"])
    assert ((heads["fraction"] > 0) & (heads["fraction"] < 1)).all()


def one_head_q_rows(model: nn.Module, layer: int, head: int) -> Mask:
    """Exactly one head's query rows kept, built from the registry's blocks."""
    tensors = {
        name: torch.zeros_like(w, dtype=torch.bool)
        for name, w in maskable_parameters(model).items()
    }
    for name, piece in iter_blocks(model):
        if (piece.layer, piece.block, piece.head) == (layer, "attn_q", head):
            tensors[name][piece.rows, piece.cols] = True
    return Mask(tensors)


def test_one_heads_query_rows_are_that_head_alone(arch):
    """In the views; and in the model's own attention: dropping those rows changes that head's
    attention pattern and no other's (eager attention, the model's own head split)."""
    model = make_tiny_model(arch)
    layer, head = 1, 2
    only = one_head_q_rows(model, layer, head)
    heads = head_view(only, model)
    chosen = (heads["layer"] == layer) & (heads["block"] == "attn_q") & (heads["head"] == head)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert heads.loc[chosen, ["kept", "total"]].values.tolist() == [
        [head_dim * config.hidden_size] * 2
    ]
    assert heads.loc[~chosen, "kept"].eq(0).all()
    assert neuron_view(only, model)["kept"].eq(0).all()
    assert head_view(~only, model).loc[chosen, "kept"].tolist() == [0]

    model.set_attn_implementation("eager")
    ids = token_ids()
    with torch.no_grad():
        full = model(input_ids=ids, output_attentions=True).attentions
        with apply_mask(model, ~only):
            dropped = model(input_ids=ids, output_attentions=True).attentions
    assert torch.equal(full[0], dropped[0])
    changed = [
        not torch.allclose(full[layer][:, h], dropped[layer][:, h], atol=1e-6)
        for h in range(config.num_attention_heads)
    ]
    assert changed == [h == head for h in range(config.num_attention_heads)]


def one_mlp_unit(model: nn.Module, arch: str, layer: int, unit: int) -> Mask:
    """Exactly one MLP unit kept across gate/in/out, from the modules themselves: nn.Linear stores
    (out, in), GPT-2's Conv1D (in, out); a unit is an output of gate/in, an input of out."""
    layers_path, modules = MLP_MODULES[arch]
    tensors = {
        name: torch.zeros_like(w, dtype=torch.bool)
        for name, w in maskable_parameters(model).items()
    }
    for block, path in modules.items():
        module = model.get_submodule(f"{layers_path}.{layer}.{path}")
        keep = tensors[f"{layers_path}.{layer}.{path}.weight"]
        unit_is_output = block != "mlp_out"
        if isinstance(module, nn.Linear) == unit_is_output:
            keep[unit, :] = True
        else:
            keep[:, unit] = True
    return Mask(tensors)


def test_one_mlp_unit_is_that_neuron_alone(arch):
    model = make_tiny_model(arch)
    layer, unit = 0, 5
    neurons = neuron_view(one_mlp_unit(model, arch, layer, unit), model)
    chosen = (neurons["layer"] == layer) & (neurons["unit"] == unit)
    blocks = sorted(MLP_MODULES[arch][1])
    assert (
        sorted(
            c.removesuffix("_kept") for c in neurons if c.startswith("mlp") and c.endswith("_kept")
        )
        == blocks
    )
    row = neurons[chosen].iloc[0]
    hidden = model.config.hidden_size
    for block in blocks:
        assert (row[f"{block}_kept"], row[f"{block}_total"]) == (hidden, hidden)
    assert (row["kept"], row["fraction"]) == (hidden * len(blocks), 1.0)
    assert neurons.loc[~chosen, "kept"].eq(0).all()
    assert head_view(one_mlp_unit(model, arch, layer, unit), model)["kept"].eq(0).all()


def test_views_refuse_a_mask_of_another_model():
    gpt2, neox = make_tiny_model("gpt2"), make_tiny_model("gpt_neox")
    with pytest.raises(
        ValueError, match=r"head_view: weight 'gpt_neox\.layers\.0.*not in the model"
    ):
        head_view(random_mask(neox), gpt2)
    partial = Mask(dict(list(random_mask(gpt2).tensors.items())[:-1]))
    with pytest.raises(ValueError, match=r"neuron_view: the mask must cover exactly .*missing"):
        neuron_view(partial, gpt2)


# --- a permanently masked model ----------------------------------------------------------------


def test_masked_copy_is_the_masked_model_and_leaves_the_original(arch, tmp_path):
    model = make_tiny_model(arch)
    mask = random_mask(model, seed=4)
    before = weights_of(model)
    ids = token_ids()
    expected = masked_logits(model, mask, ids)
    clone = masked_copy(model, mask)
    assert torch.equal(logits_of(clone, ids), expected)
    after = weights_of(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    cloned = dict(clone.named_parameters())
    for name, keep in mask.tensors.items():
        weight = cloned[name].detach()
        assert weight.data_ptr() != dict(model.named_parameters())[name].data_ptr()
        assert torch.equal(weight[~keep], torch.zeros(int((~keep).sum())))
        assert not torch.signbit(weight[~keep]).any()  # +0.0, not -0.0
        assert torch.equal(weight[keep], before[name][keep])
    assert not torch.equal(logits_of(model, ids), expected)
    clone.save_pretrained(tmp_path / "masked")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "masked").eval()
    assert torch.equal(logits_of(reloaded, ids), expected)


def test_masked_copy_refuses_a_mask_of_another_model():
    with pytest.raises(ValueError, match="masked_copy: weight 'gpt_neox"):
        masked_copy(make_tiny_model("gpt2"), random_mask(make_tiny_model("gpt_neox")))


@pytest.fixture(scope="module")
def tiny_tokenizer():
    texts = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen jugs."]
    return train_bpe(texts * 4, vocab_size=300)


# --- TransformerLens ---------------------------------------------------------------------------

# Per attention block: TransformerLens's weight, [layers, heads, ...] (key/value heads for k, v).
TL_HEAD_WEIGHTS = {"attn_q": "W_Q", "attn_k": "W_K", "attn_v": "W_V", "attn_o": "W_O"}
# Per MLP block: TransformerLens's weight and the axis of its [layer] slice that is the MLP unit
# (W_in, W_gate: [d_model, d_mlp]; W_out: [d_mlp, d_model]).
TL_MLP_WEIGHTS = {"mlp_gate": ("W_gate", 1), "mlp_in": ("W_in", 1), "mlp_out": ("W_out", 0)}


def tl_zeros(bridge) -> int:
    names = [*TL_HEAD_WEIGHTS.values(), *(w for w, _ in TL_MLP_WEIGHTS.values())]
    return sum(int((w == 0).sum()) for w in (getattr(bridge, n) for n in names) if w is not None)


def test_transformer_lens_without_processing_is_the_masked_model(arch):
    """Logits to float tolerance, and the masked-out weights are the zeros of TransformerLens's
    per-head and per-unit weights, head by head and unit by unit: TransformerLens's own split
    of GPT-NeoX's interleaved QKV, GPT-2's Conv1D and grouped-query k/v agrees with the registry's
    (through head_view and neuron_view)."""
    pytest.importorskip("transformer_lens", reason="transformer-lens is not installed")
    model = make_tiny_model(arch)
    assert not any(bool((w == 0).any()) for w in maskable_parameters(model).values())
    mask = random_mask(model, seed=5)
    ids = token_ids()
    expected = masked_logits(model, mask, ids)
    bridge = to_transformer_lens(model, mask)
    with torch.no_grad():
        got = bridge(ids, return_type="logits")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert tl_zeros(bridge) == mask.n_total - mask.n_kept
    heads = head_view(mask, model)
    for (layer, block, head), dropped in (
        heads.set_index(["layer", "block", "head"]).eval("total - kept").items()
    ):
        weight = getattr(bridge, TL_HEAD_WEIGHTS[block])[layer, head]
        assert int((weight == 0).sum()) == dropped, (layer, block, head)
    neurons = neuron_view(mask, model)
    for block, (attr, unit_axis) in TL_MLP_WEIGHTS.items():
        if f"{block}_kept" not in neurons:
            assert getattr(bridge, attr) is None
            continue
        for layer, rows in neurons.groupby("layer"):
            zeros = (getattr(bridge, attr)[layer] == 0).sum(dim=1 - unit_axis)
            dropped = rows[f"{block}_total"] - rows[f"{block}_kept"]
            assert zeros.tolist() == dropped.tolist(), (layer, block)
    # The caller's model is neither masked nor rebuilt by the bridge.
    assert torch.equal(logits_of(model, ids), logits_of(make_tiny_model(arch), ids))
    assert type(model.get_submodule(MLP_MODULES[arch][0])[0]).__module__.startswith("transformers")


def test_transformer_lens_weight_processing_moves_the_zeros(arch):
    """What processing does to a masked model: the log-probabilities survive, the logits do not
    (center_unembed shifts them per position), and in LayerNorm families the masked-out weights
    are no longer zero (fold_ln and center_writing_weights centre them); RMSNorm families (the
    Llama layout) are only rescaled, so there the zeros stay."""
    pytest.importorskip("transformer_lens", reason="transformer-lens is not installed")
    model = make_tiny_model(arch)
    mask = random_mask(model, seed=6)
    ids = token_ids()
    expected = masked_logits(model, mask, ids)
    bridge = to_transformer_lens(model, mask, compatibility_mode=False)
    assert tl_zeros(bridge) == mask.n_total - mask.n_kept
    bridge.enable_compatibility_mode(disable_warnings=True)  # default: all processing on
    with torch.no_grad():
        got = bridge(ids, return_type="logits")
    assert (got - expected).abs().max() > 1e-2
    torch.testing.assert_close(got.log_softmax(-1), expected.log_softmax(-1), atol=1e-4, rtol=0)
    if ZEROS_SURVIVE_PROCESSING[arch]:
        assert tl_zeros(bridge) == mask.n_total - mask.n_kept
    else:
        assert tl_zeros(bridge) < 0.01 * (mask.n_total - mask.n_kept)


def test_transformer_lens_with_a_tokenizer_runs_text(arch, tiny_tokenizer, tmp_path):
    """TransformerLens re-loads the tokenizer from its directory with add_bos_token=True, so
    its tokens (BOS first where the family's adapter prepends it) are what to compare with."""
    pytest.importorskip("transformer_lens", reason="transformer-lens is not installed")
    tiny_tokenizer.save_pretrained(tmp_path / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    model = make_tiny_model(arch, vocab_size=len(tokenizer))
    mask = random_mask(model, seed=9)
    bridge = to_transformer_lens(model, mask, tokenizer=tokenizer)
    prompt = "The lazy fox jumps"
    ids = bridge.to_tokens(prompt)
    assert ids[0, -5:].tolist() == tokenizer(prompt).input_ids[-5:]
    with torch.no_grad():
        got = bridge(prompt, return_type="logits")
    torch.testing.assert_close(got, masked_logits(model, mask, ids), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="re-loads this tokenizer from its name_or_path"):
        to_transformer_lens(model, mask, tokenizer=tiny_tokenizer)


def test_transformer_lens_refuses_processing_options():
    model = make_tiny_model("gpt2")
    with pytest.raises(ValueError, match=r"without weight processing, got \['fold_ln'\]"):
        to_transformer_lens(model, random_mask(model), fold_ln=True)


# --- nnsight -----------------------------------------------------------------------------------


def envoy_at(root, dotted: str):
    for part in dotted.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def mlp_out_module(model: nn.Module, layer: int = 0) -> str:
    """The module of layer ``layer``'s MLP output projection, named from the registry."""
    names = [n for n, p in iter_blocks(model) if (p.layer, p.block) == (layer, "mlp_out")]
    return names[0].removesuffix(".weight")


def hooked_readings(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual stream after block 0, layer 0's MLP output) by plain forward hooks."""
    seen = {}
    module = model.get_submodule(mlp_out_module(model))
    handle = module.register_forward_hook(lambda mod, args, out: seen.update(mlp=out.detach()))
    try:
        with residual_hooks(model) as states, torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return states[1], seen["mlp"]


def traced_readings(wrapped, model: nn.Module, ids: torch.Tensor):
    """`hooked_readings` from an nnsight trace: the same modules, requested in the order the
    forward pass reaches them (nnsight's rule), the MLP inside block 0 before block 0's output."""
    with wrapped.trace(input_ids=ids):
        mlp = envoy_at(wrapped, mlp_out_module(model)).output.save()
        resid = envoy_at(wrapped, spec_for(model).layers_path)[0].output.save()
    return resid.detach(), mlp.detach()


def test_nnsight_traces_read_the_masked_residual_stream(arch):
    """A trace of the masked copy, and a trace of the original inside apply_mask, read what plain
    forward hooks read on our masked model (exactly), and not what the full model computes."""
    nnsight = pytest.importorskip("nnsight", reason="nnsight is not installed")
    model = make_tiny_model(arch)
    mask = random_mask(model, seed=7)
    ids = token_ids()
    with apply_mask(model, mask):
        expected = hooked_readings(model, ids)
    full = hooked_readings(model, ids)
    assert not torch.allclose(expected[0], full[0], atol=1e-3)
    assert not torch.allclose(expected[1], full[1], atol=1e-3)

    copy_traced = traced_readings(to_nnsight(model, mask), model, ids)
    wrapped = nnsight.NNsight(model)
    with apply_mask(model, mask):
        in_context = traced_readings(wrapped, model, ids)
    for got in (copy_traced, in_context):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert torch.equal(hooked_readings(model, ids)[0], full[0])  # the original is untouched


def test_nnsight_with_a_tokenizer_traces_text(arch, tiny_tokenizer):
    pytest.importorskip("nnsight", reason="nnsight is not installed")
    model = make_tiny_model(arch, vocab_size=len(tiny_tokenizer))
    mask = random_mask(model, seed=8)
    prompt = "The lazy fox jumps"
    ids = tiny_tokenizer(prompt, return_tensors="pt").input_ids
    wrapped = to_nnsight(model, mask, tokenizer=tiny_tokenizer)
    assert wrapped.tokenizer is tiny_tokenizer
    with wrapped.trace(prompt):
        out = wrapped.output.save()
    assert torch.equal(out.logits.detach(), masked_logits(model, mask, ids))
