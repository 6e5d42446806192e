"""Parity of our mask with the authors' on tiny real models: sizes, first-MLP shares, overlap with
its permutation null, Jaccard and containment, checked against counts made by hand."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from bigram_subnetworks.architectures import maskable_parameters, model_unit_blocks
from bigram_subnetworks.masking import Mask
from bigram_subnetworks.parity import parity_row
from bigram_subnetworks.released import load_released_mask

from conftest import make_tiny_model

FIRST_MLP = {
    "gpt_neox": (
        "gpt_neox.layers.0.mlp.dense_h_to_4h.weight",
        "gpt_neox.layers.0.mlp.dense_4h_to_h.weight",
    ),
    "gpt2": ("transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"),
    "llama": (
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ),
}
NULL = {"null_model": "rows", "permutations": 199, "seed": 0}


def _random_mask(model, density: float, seed: int) -> Mask:
    generator = torch.Generator().manual_seed(seed)
    return Mask(
        {
            name: torch.rand(weight.shape, generator=generator) < density
            for name, weight in maskable_parameters(model).items()
        }
    )


def _hand_counts(mask: Mask, arch: str) -> tuple[int, int, int]:
    """(kept, total, kept in the first MLP) by summing numpy copies of the tensors."""
    arrays = {name: tensor.numpy() for name, tensor in mask.tensors.items()}
    kept = sum(int(np.count_nonzero(a)) for a in arrays.values())
    total = sum(a.size for a in arrays.values())
    first = sum(int(np.count_nonzero(arrays[name])) for name in FIRST_MLP[arch])
    return kept, total, first


@pytest.mark.parametrize("null_model", ["rows", "entries"])
def test_identical_masks_overlap_by_their_density(arch, null_model):
    model = make_tiny_model(arch)
    mask = _random_mask(model, 0.1, seed=1)
    row = parity_row(mask, mask, model_unit_blocks(model), **(NULL | {"null_model": null_model}))
    kept, total, _ = _hand_counts(mask, arch)
    assert row["n_both"] == row["n_ours"] == row["n_theirs"] == kept
    assert (
        row["overlap"] == row["kept_fraction_ours"] == row["kept_fraction_theirs"] == kept / total
    )
    assert row["jaccard"] == row["ours_in_theirs"] == row["theirs_in_ours"] == 1.0
    assert row["expected_overlap"] < row["overlap"] / 5  # ≈ density² for random masks
    assert row["p_value"] == 1 / 200  # no null sample reaches the observed overlap
    assert row["null_model"] == null_model and row["permutations"] == 199


def test_a_mask_and_its_complement_share_nothing(arch):
    model = make_tiny_model(arch)
    mask = _random_mask(model, 0.3, seed=2)
    row = parity_row(mask, ~mask, model_unit_blocks(model), **NULL)
    assert row["n_both"] == 0 and row["overlap"] == 0.0
    assert row["jaccard"] == row["ours_in_theirs"] == row["theirs_in_ours"] == 0.0
    assert row["kept_fraction_ours"] + row["kept_fraction_theirs"] == pytest.approx(1.0)
    assert row["p_value"] == 1.0  # every null sample overlaps at least as much


def test_kept_fractions_and_first_mlp_shares_match_hand_counts(arch, tmp_path):
    """Ours concentrated in the first MLP layer, theirs imported from a released pickle."""
    model = make_tiny_model(arch)
    ours = _random_mask(model, 0.05, seed=3)
    ours = Mask(
        {
            name: torch.ones_like(t) if name == FIRST_MLP[arch][0] else t
            for name, t in ours.tensors.items()
        }
    )
    rng = np.random.default_rng(4)
    released = {
        name: rng.random(tuple(weight.shape)) < 0.2
        for name, weight in maskable_parameters(model).items()
    }
    path = tmp_path / "subnetwork_dict_lambda1e1.pickle"
    path.write_bytes(pickle.dumps({**released, "orig_model_name": "EleutherAI/pythia-70m"}))
    theirs = load_released_mask(path, model)
    row = parity_row(ours, theirs, model_unit_blocks(model), **NULL)

    for who, mask in (("ours", ours), ("theirs", theirs)):
        kept, total, first = _hand_counts(mask, arch)
        assert row["n_total"] == total
        assert row[f"n_{who}"] == kept
        assert row[f"kept_fraction_{who}"] == kept / total
        assert row[f"first_mlp_kept_{who}"] == first
        assert row[f"first_mlp_share_{who}"] == first / kept
    assert row["first_mlp_share_ours"] > 0.5 > row["first_mlp_share_theirs"]

    both = sum(
        int(np.count_nonzero(ours.tensors[name].numpy() & array))
        for name, array in released.items()
    )
    assert row["n_both"] == both
    assert row["overlap"] == both / row["n_total"]
    assert row["jaccard"] == both / (row["n_ours"] + row["n_theirs"] - both)
    assert row["ours_in_theirs"] == both / row["n_ours"]
    assert row["theirs_in_ours"] == both / row["n_theirs"]
    assert 0.0 < row["p_value"] <= 1.0
    assert list(row)[:4] == ["n_total", "n_ours", "n_theirs", "n_both"]


def test_an_empty_mask_gives_nan_ratios_not_an_error():
    model = make_tiny_model("gpt2")
    theirs = _random_mask(model, 0.1, seed=5)
    row = parity_row(Mask.empty(theirs.shapes), theirs, model_unit_blocks(model), **NULL)
    assert row["n_ours"] == row["n_both"] == 0 and row["jaccard"] == 0.0
    assert math.isnan(row["first_mlp_share_ours"]) and math.isnan(row["ours_in_theirs"])
    assert row["theirs_in_ours"] == 0.0 and row["first_mlp_share_theirs"] > 0


def test_masks_over_other_weights_are_refused():
    model = make_tiny_model("gpt2")
    ours = _random_mask(model, 0.1, seed=6)
    theirs = _random_mask(make_tiny_model("gpt_neox"), 0.1, seed=6)
    with pytest.raises(ValueError, match="is only in mask"):
        parity_row(ours, theirs, model_unit_blocks(model), **NULL)
