"""Overlap statistics and their permutation nulls (docs/method.md §8), on tiny real models."""

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AttentionInterface
from transformers.models.gpt_neox import modeling_gpt_neox

from bigram_subnetworks._overlap_null import distinct_draws, row_intersections
from bigram_subnetworks.architectures import (
    Heads,
    UnitBlock,
    maskable_parameters,
    model_unit_blocks,
    spec_for,
    unit_blocks_for_shapes,
)
from bigram_subnetworks.masking import Mask, apply_mask
from bigram_subnetworks.overlap import (
    BREAKDOWN_COLUMNS,
    PAIRS,
    layer_summary,
    magnitude_mask,
    null_samples,
    overlap_breakdown,
    overlap_summary,
    overlap_with_control,
)

from conftest import make_tiny_model

NULLS = ("rows", "entries")


def _shapes(model):
    return {n: w.shape for n, w in maskable_parameters(model).items()}


def _random_mask(shapes, density, seed):
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(s, generator=g) < density for n, s in shapes.items()})


def _pair(model, seed=0):
    """A and B that share more than chance: B keeps 10% of everything plus half of A."""
    shapes = _shapes(model)
    a = _random_mask(shapes, 0.2, seed)
    noise = _random_mask(shapes, 0.1, seed + 1)
    half = _random_mask(shapes, 0.5, seed + 2)
    return a, noise | (a & half)


def _toy_block(name, rows, cols):
    every = (slice(None),)
    return UnitBlock(name, 0, "mlp_in", (rows, cols), every, every, False, None, None)


# ---------------------------------------------------------------------------------------------
# Identical, disjoint, and the summary's arithmetic.


@pytest.mark.parametrize("null_model", NULLS)
def test_identical_masks_overlap_is_their_density(arch, null_model):
    model = make_tiny_model(arch)
    a = _random_mask(_shapes(model), 0.3, seed=0)
    s = overlap_summary(
        a, a, model_unit_blocks(model), null_model=null_model, permutations=200, seed=0
    )
    assert s["overlap"] == pytest.approx(a.density)
    assert s["fraction_a_in_b"] == 1.0
    assert s["density_a"] == s["density_b"] == pytest.approx(a.density)
    assert s["n_both"] == a.n_kept and s["n_total"] == a.n_total
    # Nothing permuted reaches a perfect overlap: the +1 p-value floor.
    assert s["n_null_at_least_actual"] == 0
    assert s["p_value"] == pytest.approx(1 / 201) and s["p_value_paper"] == 0.0


@pytest.mark.parametrize("null_model", NULLS)
def test_disjoint_masks_overlap_is_zero(arch, null_model):
    model = make_tiny_model(arch)
    a = _random_mask(_shapes(model), 0.3, seed=0)
    b = ~a & _random_mask(_shapes(model), 0.5, seed=1)
    s = overlap_summary(
        a, b, model_unit_blocks(model), null_model=null_model, permutations=200, seed=0
    )
    assert s["n_both"] == 0 and s["overlap"] == 0.0 and s["fraction_a_in_b"] == 0.0
    assert s["expected_overlap"] > 0
    assert s["p_value"] == 1.0 and s["z_score"] < 0


def test_summary_fields_are_consistent(arch):
    model = make_tiny_model(arch)
    a, b = _pair(model)
    s = overlap_summary(a, b, model_unit_blocks(model), null_model="rows", permutations=500, seed=0)
    n = a.n_total
    assert s["overlap"] == (a & b).n_kept / n
    assert s["fraction_a_in_b"] == pytest.approx(s["overlap"] * n / a.n_kept)
    assert s["density_b"] == b.n_kept / n
    assert s["z_score"] == pytest.approx((s["overlap"] - s["expected_overlap"]) / s["null_std"])
    assert s["overlap"] > s["expected_overlap"] + 5 * s["null_std"]  # B was built around A
    assert s["p_value"] == (s["n_null_at_least_actual"] + 1) / 501


# ---------------------------------------------------------------------------------------------
# The rows null against brute force.


def _toy_masks():
    """Two blocks (4 × 3 and 3 × 2 units × inputs) with uneven rows, so the null is non-trivial."""
    a = {
        "w1": torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool),
        "w2": torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool),
    }
    b = {
        "w1": torch.tensor([[1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 1]], dtype=torch.bool),
        "w2": torch.tensor([[0, 1], [1, 1], [0, 0]], dtype=torch.bool),
    }
    blocks = [_toy_block("w1", 4, 3), _toy_block("w2", 3, 2)]
    return Mask(a), Mask(b), blocks


def _exact_rows_null(a: Mask, b: Mask, both: bool) -> dict[int, float]:
    """P(overlap = x) by enumerating every row permutation of every block (of B, or of both)."""
    per_block = []
    for name in a.tensors:
        ta, tb = a.tensors[name], b.tensors[name]
        perms = list(itertools.permutations(range(ta.shape[0])))
        pairs = itertools.product(perms, perms) if both else ((None, p) for p in perms)
        counts = Counter(
            int((ta[list(s) if s else slice(None)] & tb[list(t)]).sum()) for s, t in pairs
        )
        total = sum(counts.values())
        per_block.append({x: c / total for x, c in counts.items()})
    pmf = {0: 1.0}
    for block in per_block:  # blocks are independent: convolve
        nxt: Counter = Counter()
        for x, p in pmf.items():
            for y, q in block.items():
                nxt[x + y] += p * q
        pmf = dict(nxt)
    return pmf


def test_rows_null_matches_enumeration_of_all_row_permutations():
    a, b, blocks = _toy_masks()
    exact = _exact_rows_null(a, b, both=True)
    # Permuting both masks is distributed like permuting only B (the shortcut the sampler uses).
    only_b = _exact_rows_null(a, b, both=False)
    assert exact.keys() == only_b.keys()
    assert all(exact[x] == pytest.approx(only_b[x]) for x in exact)

    n = 40_000
    samples, mean, var = null_samples(a, b, blocks, null_model="rows", permutations=n, seed=3)
    exact_mean = sum(x * p for x, p in exact.items())
    exact_var = sum((x - exact_mean) ** 2 * p for x, p in exact.items())
    assert mean == pytest.approx(exact_mean)  # analytic mean Σ_c colA·colB / R per block
    assert var == pytest.approx(exact_var)  # Hoeffding's variance
    assert set(np.unique(samples)) <= set(exact)
    freq = Counter(samples.tolist())
    for x, p in exact.items():  # every frequency within 5 standard errors
        assert abs(freq[x] / n - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-9
    assert samples.mean() == pytest.approx(exact_mean, abs=5 * np.sqrt(exact_var / n))


def test_block_mean_formula_on_a_model(arch):
    """Exact mean per block = Σ_c colA_c·colB_c / R, summed; the samples agree with it."""
    model = make_tiny_model(arch)
    a, b = _pair(model)
    blocks = model_unit_blocks(model)
    samples, mean, var = null_samples(a, b, blocks, null_model="rows", permutations=4000, seed=0)
    by_formula = 0.0
    for block in blocks:
        va, vb = block.view(a.tensors[block.name]), block.view(b.tensors[block.name])
        by_formula += float((va.sum(0).double() * vb.sum(0).double()).sum()) / va.shape[0]
    assert mean == pytest.approx(by_formula)
    assert samples.mean() == pytest.approx(mean, abs=5 * np.sqrt(var / 4000))
    assert samples.std() == pytest.approx(np.sqrt(var), rel=0.08)


def test_row_intersections_dense_and_sparse_paths_are_exact():
    g = torch.Generator().manual_seed(0)
    for density in (0.5, 0.01):  # the cost model picks BLAS for the first, scipy for the second
        a = torch.rand((300, 200), generator=g) < density
        b = torch.rand((300, 200), generator=g) < density
        truth = a.long() @ b.long().T
        got = row_intersections(a, b)
        # Either orientation may be stored; rebuild the full G (or Gᵀ) from it.
        full = np.zeros((300, 300), dtype=np.int64)
        full[got.rows] = got.wide
        assert np.array_equal(full, truth.numpy()) or np.array_equal(full, truth.T.numpy())
        assert (full.sum(1)[got.rows] > 0).all()


@pytest.mark.parametrize(("n", "m"), [(5, 2), (6, 6), (2000, 600), (2000, 1900)])
def test_distinct_draws_are_uniform_ordered_samples(n, m):
    """Each regime (rejection, short-row permuted, choice, row shuffles) gives distinct values,
    uniform in every position."""
    size = 6000 if n < 10 else 200
    draws = distinct_draws(np.random.default_rng(0), n, m, size)
    assert draws.shape == (size, m)
    assert all(len(set(row)) == m for row in draws.tolist())
    assert draws.min() >= 0 and draws.max() < n
    first = np.bincount(draws[:, 0], minlength=n) / size
    if n < 10:
        assert np.abs(first - 1 / n).max() < 5 * np.sqrt(1 / n / size)
        pairs = Counter(map(tuple, draws[:, :2].tolist()))
        assert len(pairs) == n * (n - 1)
    else:  # every position's values average (n − 1)/2
        standard_error = n / np.sqrt(12 * size)
        assert np.abs(draws.mean(axis=0) - (n - 1) / 2).max() < 5 * standard_error


# ---------------------------------------------------------------------------------------------
# The entries null.


def test_entries_null_mean_is_ka_kb_over_n(arch):
    model = make_tiny_model(arch)
    a, b = _pair(model)
    blocks = model_unit_blocks(model)
    samples, mean, var = null_samples(
        a, b, blocks, null_model="entries", permutations=20_000, seed=0
    )
    expected = var_expected = 0.0
    for block in blocks:
        va, vb = block.view(a.tensors[block.name]), block.view(b.tensors[block.name])
        n, k_a, k_b = va.numel(), int(va.sum()), int(vb.sum())
        expected += k_a * k_b / n
        var_expected += k_a * k_b * (n - k_a) * (n - k_b) / (n * n * (n - 1))
    assert mean == pytest.approx(expected) and var == pytest.approx(var_expected)
    assert samples.mean() == pytest.approx(expected, abs=5 * np.sqrt(var / 20_000))
    assert samples.var() == pytest.approx(var, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Breakdown table.


@pytest.mark.parametrize("null_model", NULLS)
@pytest.mark.parametrize("per_head", [True, False])
def test_breakdown_sums_to_the_totals(arch, null_model, per_head):
    model = make_tiny_model(arch, layers=3)
    a, b = _pair(model)
    blocks = model_unit_blocks(model)
    table = overlap_breakdown(a, b, blocks, null_model=null_model, per_head=per_head)
    assert tuple(table.columns) == BREAKDOWN_COLUMNS
    assert table["n_total"].sum() == a.n_total
    assert table["n_a"].sum() == a.n_kept and table["n_b"].sum() == b.n_kept
    assert table["n_both"].sum() == (a & b).n_kept
    _, mean, _ = null_samples(a, b, blocks, null_model=null_model, permutations=1, seed=0)
    assert table["expected_both"].sum() == pytest.approx(mean)
    assert set(table["layer"]) == {0, 1, 2}
    gate = ["mlp_gate"] if arch == "llama" else []
    blocks_of_layer = ["attn_q", "attn_k", "attn_v", "attn_o", *gate, "mlp_in", "mlp_out"]
    first_layer = table.drop_duplicates(["layer", "block"])["block"][: len(blocks_of_layer)]
    assert list(first_layer) == blocks_of_layer
    heads = table.groupby(["layer", "block"])["head"].count()  # non-NA heads per block
    attention = heads.index.get_level_values("block").str.startswith("attn")
    key_value = heads.index.get_level_values("block").isin(["attn_k", "attn_v"])
    kv_heads = 2 if arch == "llama" else 4  # the tiny Llama's grouped-query attention
    assert (heads[attention & ~key_value] == (4 if per_head else 0)).all()
    assert (heads[key_value] == (kv_heads if per_head else 0)).all()
    assert (heads[~attention] == 0).all()
    np.testing.assert_allclose(
        table["frac_shared"] + table["frac_only_a"] + table["frac_only_b"],
        (table["n_a"] + table["n_b"] - table["n_both"]) / table["n_total"],
    )
    summary = layer_summary(table)
    overall = summary[summary["layer"] == -1].iloc[0]
    assert overall["n_both"] == (a & b).n_kept
    assert overall["frac_shared"] == pytest.approx((a & b).n_kept / a.n_total)
    per_part = summary[summary["part"] != "all"].groupby("layer")["n_total"].sum()
    assert (per_part == a.n_total // 3).all()


def _capture_attention(model):
    """Record the query/key/value states the model's own attention receives, [b, heads, t, d]."""
    states: dict[str, list[torch.Tensor]] = {"q": [], "k": [], "v": []}

    def capture(module, query, key, value, attention_mask, **kwargs):
        for name, t in zip("qkv", (query, key, value), strict=True):
            states[name].append(t.detach().clone())
        return modeling_gpt_neox.eager_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )

    AttentionInterface.register("overlap_test_capture", capture)
    model.set_attn_implementation("overlap_test_capture")
    return states


def test_gpt_neox_per_head_labels_follow_the_models_own_qkv_split():
    """Keep only some QKV rows, check with the model's forward which head's key they feed, and
    that the breakdown files them under that head."""
    model = make_tiny_model("gpt_neox")
    for p in model.parameters():
        p.requires_grad_(False)
    attention = model.gpt_neox.layers[0].attention
    attention.query_key_value.bias.zero_()
    head_size, hidden = attention.head_size, model.config.hidden_size
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    # Rows (3h + 1)·d … (3h + 2)·d: head 1's K under per-head interleaving [q_h, k_h, v_h].
    rows = torch.arange((3 * 1 + 1) * head_size, (3 * 1 + 2) * head_size)
    keep = dict(Mask.empty(_shapes(model)).tensors)
    keep[name] = torch.zeros(3 * hidden, hidden, dtype=torch.bool)
    keep[name][rows] = True
    mask = Mask(keep)

    states = _capture_attention(model)
    with apply_mask(model, mask):
        model(input_ids=torch.arange(8)[None])
    key, query, value = states["k"][0], states["q"][0], states["v"][0]
    assert key[:, 1].abs().sum() > 0  # head 1's key is what the kept rows feed
    assert key[:, [0, 2, 3]].abs().sum() == 0
    assert query.abs().sum() == 0 and value.abs().sum() == 0

    table = overlap_breakdown(mask, mask, model_unit_blocks(model), null_model="rows")
    kept = table[table["n_a"] > 0]
    assert len(kept) == 1
    row = kept.iloc[0]
    assert (row["layer"], row["block"], row["head"]) == (0, "attn_k", 1)
    assert row["n_a"] == row["n_both"] == head_size * hidden


def test_gpt_neox_attn_o_heads_are_input_columns():
    model = make_tiny_model("gpt_neox")
    shapes = _shapes(model)
    name = "gpt_neox.layers.1.attention.dense.weight"
    tensors = dict(Mask.empty(shapes).tensors)
    tensors[name] = torch.zeros(shapes[name], dtype=torch.bool)
    tensors[name][:, 2 * 8 : 3 * 8] = True  # head 2's 8 input features (head_size 32/4)
    mask = Mask(tensors)
    table = overlap_breakdown(mask, mask, model_unit_blocks(model), null_model="entries")
    kept = table[table["n_a"] > 0]
    assert kept[["layer", "block", "head"]].values.tolist() == [[1, "attn_o", 2]]


def test_gpt2_blocks_are_transposed_and_split_in_column_thirds():
    model = make_tiny_model("gpt2")
    shapes = _shapes(model)
    hidden, head_size = 32, 8
    blocks = model_unit_blocks(model)
    # c_fc is stored (in, out): its unit view is the transpose, one row per output unit.
    c_fc = "transformer.h.0.mlp.c_fc.weight"
    weight = model.get_parameter(c_fc)
    (mlp_in,) = [blk for blk in blocks if blk.name == c_fc]
    assert mlp_in.view_shape == (64, 32)
    assert torch.equal(mlp_in.view(weight), weight.T)

    tensors = dict(Mask.empty(shapes).tensors)
    c_attn = "transformer.h.0.attn.c_attn.weight"
    tensors[c_attn] = torch.zeros(shapes[c_attn], dtype=torch.bool)
    start = 2 * hidden + 1 * head_size  # V third, head 1's output columns
    tensors[c_attn][:, start : start + head_size] = True
    c_proj = "transformer.h.1.attn.c_proj.weight"
    tensors[c_proj] = torch.zeros(shapes[c_proj], dtype=torch.bool)
    tensors[c_proj][3 * head_size : 4 * head_size] = True  # head 3's input rows
    mask = Mask(tensors)
    table = overlap_breakdown(mask, mask, blocks, null_model="rows")
    kept = table[table["n_a"] > 0]
    assert kept[["layer", "block", "head"]].values.tolist() == [
        [0, "attn_v", 1],
        [1, "attn_o", 3],
    ]
    assert kept["n_a"].tolist() == [head_size * hidden, head_size * hidden]


def test_gpt2_rows_null_permutes_output_units():
    """Under the rows null, B and B with its output units (Conv1D columns) permuted are the
    same null; permuting B's input features (Conv1D rows) changes it."""
    model = make_tiny_model("gpt2")
    a, b = _pair(model)
    blocks = model_unit_blocks(model)
    c_fc = "transformer.h.0.mlp.c_fc.weight"
    g = torch.Generator().manual_seed(5)
    units = dict(b.tensors)
    units[c_fc] = b.tensors[c_fc][:, torch.randperm(64, generator=g)]
    inputs = dict(b.tensors)
    inputs[c_fc] = b.tensors[c_fc][torch.randperm(32, generator=g)]

    def moments(mask):
        _, mean, var = null_samples(a, mask, blocks, null_model="rows", permutations=1, seed=0)
        return mean, var

    assert moments(Mask(units)) == pytest.approx(moments(b))
    assert moments(Mask(inputs)) != pytest.approx(moments(b))


# ---------------------------------------------------------------------------------------------
# Determinism and errors.


@pytest.mark.parametrize("null_model", NULLS)
def test_deterministic_for_a_seed_and_independent_of_threads(null_model):
    model = make_tiny_model("gpt_neox")
    a, b = _pair(model)
    blocks = model_unit_blocks(model)

    def run(seed, threads):
        samples, _, _ = null_samples(
            a, b, blocks, null_model=null_model, permutations=3000, seed=seed, threads=threads
        )
        return samples

    first = run(0, 1)
    assert np.array_equal(first, run(0, 1))
    assert np.array_equal(first, run(0, 2))
    assert not np.array_equal(first, run(1, 1))


def test_mismatched_masks_name_the_weight():
    model = make_tiny_model("gpt_neox")
    a, _ = _pair(model)
    blocks = model_unit_blocks(model)
    name = "gpt_neox.layers.1.mlp.dense_4h_to_h.weight"

    missing = Mask({n: t for n, t in a.tensors.items() if n != name})
    with pytest.raises(ValueError, match=f"'{name}' is only in mask A"):
        overlap_summary(a, missing, blocks, null_model="rows", permutations=10, seed=0)

    reshaped = dict(a.tensors)
    reshaped[name] = a.tensors[name].T.contiguous()
    with pytest.raises(ValueError, match=f"'{name}' has shape"):
        overlap_breakdown(a, Mask(reshaped), blocks, null_model="rows")

    other = make_tiny_model("gpt_neox", layers=3)
    with pytest.raises(ValueError, match=r"gpt_neox\.layers\.2\..+is only in mask B"):
        overlap_summary(a, _pair(other)[0], blocks, null_model="rows", permutations=10, seed=0)

    with pytest.raises(ValueError, match="null_model must be one of"):
        overlap_summary(a, a, blocks, null_model="columns", permutations=10, seed=0)


def test_blocks_from_mask_shapes_match_blocks_from_the_model(arch):
    """Masks loaded from files need no model: blocks from their shapes are the model's blocks."""
    model = make_tiny_model(arch)
    from_shapes = unit_blocks_for_shapes(spec_for(model), _shapes(model), Heads.of(model.config))
    assert from_shapes == model_unit_blocks(model)
    with pytest.raises(ValueError, match="expects"):
        from_shapes[0].view(torch.zeros(3, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# The magnitude control pair (docs/method.md §8).


def test_magnitude_mask_keeps_the_largest_weights_of_each_matrix(arch):
    model = make_tiny_model(arch)
    weights = maskable_parameters(model)
    optimal = _random_mask(_shapes(model), 0.2, seed=0)
    control = magnitude_mask(weights, optimal)
    assert control.n_kept == optimal.n_kept  # k = the optimal mask's kept count
    assert control.per_tensor() == optimal.per_tensor()  # ranked per matrix
    for name, keep in control.tensors.items():
        magnitude = weights[name].detach().abs()
        assert magnitude[keep].min() >= magnitude[~keep].max()
        top = torch.topk(magnitude.flatten(), int(keep.sum())).indices  # no ties in random weights
        assert set(top.tolist()) == set(torch.nonzero(keep.flatten()).squeeze(1).tolist())
    assert not control.equals(optimal)


def test_magnitude_mask_breaks_ties_by_storage_order_and_checks_shapes():
    weights = {"w": torch.tensor([[1.0, -3.0, 3.0], [0.0, 2.0, -3.0]])}
    like = Mask({"w": torch.tensor([[True, True, False], [False, False, False]])})
    kept = magnitude_mask(weights, like).tensors["w"]
    assert kept.tolist() == [[False, True, True], [False, False, False]]  # -3, 3; not the last -3
    with pytest.raises(ValueError, match="'w'"):
        magnitude_mask({"w": weights["w"].T}, like)
    with pytest.raises(ValueError, match="'w'"):
        magnitude_mask({}, like)


@pytest.mark.parametrize("null_model", NULLS)
def test_the_control_pair_runs_through_the_same_statistic_and_null(arch, null_model):
    model = make_tiny_model(arch)
    blocks = model_unit_blocks(model)
    bigram, optimal = _pair(model)
    control = magnitude_mask(maskable_parameters(model), optimal)
    null = {"null_model": null_model, "permutations": 300, "seed": 5}
    summaries, breakdown = overlap_with_control(bigram, optimal, control, blocks, **null)
    assert [s["pair"] for s in summaries] == list(PAIRS)
    assert summaries[0] == {"pair": PAIRS[0], **overlap_summary(bigram, optimal, blocks, **null)}
    assert summaries[1] == {"pair": PAIRS[1], **overlap_summary(bigram, control, blocks, **null)}
    assert summaries[1]["n_b"] == summaries[0]["n_b"] == optimal.n_kept  # size-matched
    for pair, other in zip(PAIRS, (optimal, control), strict=True):
        rows = breakdown[breakdown["pair"] == pair].drop(columns="pair").reset_index(drop=True)
        expected = overlap_breakdown(bigram, other, blocks, null_model=null_model)
        pd.testing.assert_frame_equal(rows, expected)
