"""Residual-stream lens (docs/method.md §10): hooks, activations, ridge maps, rotations and
covariances."""

import logging

import numpy as np
import pytest
import torch

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.lens import (
    Activations,
    collect_activations,
    covariance_similarity,
    eigen_rotations,
    fit_lens,
    fit_linear_maps,
    recall_hits,
    residual_hooks,
    residual_modules,
    rotation_summary,
    token_embeddings,
)
from bigram_subnetworks.masking import Mask, apply_mask

from conftest import VOCAB, make_tiny_model


def _rotation(degrees: float, scale: float = 1.0) -> np.ndarray:
    t = np.deg2rad(degrees)
    return scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_rotation_angles_of_an_embedded_2d_rotation():
    w = np.eye(6)
    w[2:4, 2:4] = _rotation(30.0, scale=2.0)
    angles, moduli = eigen_rotations(w)
    assert sorted(angles) == pytest.approx([0, 0, 0, 0, 30, 30])
    assert sorted(moduli) == pytest.approx([1, 1, 1, 1, 2, 2])
    # the transpose rotates the other way: same |angle|
    assert sorted(eigen_rotations(w.T)[0]) == pytest.approx(sorted(angles))


def test_rotation_summary_is_the_median_over_eigenvalues():
    w = np.zeros((7, 7))
    for block, degrees in enumerate([10.0, 50.0, 80.0]):
        w[2 * block : 2 * block + 2, 2 * block : 2 * block + 2] = _rotation(degrees, 1.0 + block)
    w[6, 6] = -0.5  # a negative real eigenvalue is a 180° rotation
    # angles {10,10,50,50,80,80,180}, moduli {1,1,2,2,3,3,0.5}
    rotation, scaling = rotation_summary(w)
    assert rotation == pytest.approx(50.0)
    assert scaling == pytest.approx(2.0)
    # invariant under a change of basis: eigenvalues of Q W Qᵀ are those of W
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(7, 7)))
    assert rotation_summary(q @ w @ q.T) == pytest.approx((50.0, 2.0))


def test_ridge_recovers_a_known_affine_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 8)).astype(np.float32)
    w_a, w_b = rng.normal(size=(8, 8)), rng.normal(size=(3, 8))
    b_a, b_b = rng.normal(size=8), rng.normal(size=3)
    maps = fit_linear_maps(x, {"a": x @ w_a.T + b_a, "b": x @ w_b.T + b_b}, alpha=1.0)
    # α = 1 against XᵀX ≈ 4000·I shrinks by ~1/4000
    np.testing.assert_allclose(maps["a"].coef, w_a, rtol=0, atol=2e-3)
    np.testing.assert_allclose(maps["b"].coef, w_b, rtol=0, atol=2e-3)
    np.testing.assert_allclose(maps["a"].intercept, b_a, atol=2e-3)
    np.testing.assert_allclose(maps["a"](x[:5]), x[:5] @ w_a.T + b_a, atol=1e-2)
    assert maps["a"].coef.dtype == np.float64
    # the stacked fit equals separate fits
    alone = fit_linear_maps(x, {"b": x @ w_b.T + b_b}, alpha=1.0)["b"]
    np.testing.assert_allclose(alone.coef, maps["b"].coef, atol=1e-10)


def _synthetic_activations(layers: list[np.ndarray]) -> Activations:
    n = len(layers[0])
    zeros = np.zeros(n, dtype=np.int64)
    return Activations(tuple(layers), zeros, zeros - 1, np.full(n, np.nan), zeros, zeros)


def test_covariance_similarity_matches_explicit_covariances():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    layers = [
        base,
        3.0 * base + 7.0,  # same covariance up to scale: similarity 1
        rng.normal(size=(300, 5)) * np.arange(1, 6),
        np.tanh(base) + rng.normal(size=(300, 5)),
    ]
    acts = _synthetic_activations([layer.astype(np.float32) for layer in layers])
    table = covariance_similarity(acts)
    assert list(table.columns) == ["layer_i", "layer_j", "similarity"]
    sim = table.pivot(index="layer_i", columns="layer_j", values="similarity").to_numpy()
    covs = [np.cov(layer.T.astype(np.float64), bias=True) for layer in acts.layers]
    brute = np.array(
        [[np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)) for b in covs] for a in covs]
    )
    np.testing.assert_allclose(sim, brute, rtol=1e-10)
    np.testing.assert_allclose(sim, sim.T, rtol=0, atol=0)
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-12)
    assert sim[0, 1] == pytest.approx(1.0)
    assert np.all((sim > 0) & (sim <= 1 + 1e-12))


def test_hooks_leave_outputs_unchanged_and_are_removed(arch, random_tokens):
    model = make_tiny_model(arch)
    ids = torch.from_numpy(random_tokens[:4])
    hooked = [*residual_modules(model)[0], residual_modules(model)[1]]
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with residual_hooks(model) as states:
            captured = model(input_ids=ids).logits
            assert all(state is not None for state in states)
            assert sum(len(m._forward_pre_hooks) for m in hooked) == len(hooked)
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
        torch.testing.assert_close(captured, plain, rtol=0, atol=0)
        acts = collect_activations(model, random_tokens[:4], VOCAB, batch_size=2)
        assert all(not m._forward_pre_hooks for m in model.modules())
        torch.testing.assert_close(model(input_ids=ids).logits, plain, rtol=0, atol=0)
    assert acts.n_tokens == ids.numel()


def test_hooks_are_removed_when_the_body_raises(arch):
    model = make_tiny_model(arch)
    with pytest.raises(RuntimeError, match="boom"), residual_hooks(model):
        raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_first_and_last_layers_are_embedding_and_pre_final_ln(arch, random_tokens):
    model = make_tiny_model(arch, layers=3)
    tokens = random_tokens[:6]
    acts = collect_activations(model, tokens, VOCAB, batch_size=4)
    assert len(acts.layers) == 4 and acts.n_tokens == tokens.size
    ids = torch.from_numpy(tokens)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        embedding = model.get_input_embeddings()(ids)
        if arch == "gpt2":  # GPT-2 adds learned position embeddings; NeoX uses rotary inside
            embedding = embedding + model.transformer.wpe(torch.arange(ids.shape[1]))
        last = torch.from_numpy(acts.layers[-1]).view(*ids.shape, -1)
        norm = residual_modules(model)[1]
        logits = model.get_output_embeddings()(norm(last))
    np.testing.assert_allclose(acts.layers[0], embedding.reshape(-1, 32).numpy(), atol=1e-6)
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
    # HF's own last hidden state is after the final LN, hence the hooks
    torch.testing.assert_close(out.hidden_states[-1], norm(last))
    assert not torch.allclose(out.hidden_states[-1], last)
    # intermediate layers agree with HF's
    for layer in range(1, 3):
        np.testing.assert_allclose(
            acts.layers[layer], out.hidden_states[layer].reshape(-1, 32).numpy(), atol=1e-6
        )
    # bookkeeping: current token, next token, and the model's own surprisal in bits
    np.testing.assert_array_equal(acts.input_ids, tokens.ravel())
    assert np.all(acts.next_ids.reshape(6, 16)[:, -1] == -1)
    np.testing.assert_array_equal(acts.next_ids.reshape(6, 16)[:, :-1], tokens[:, 1:])
    log_p = torch.log_softmax(out.logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    np.testing.assert_allclose(
        acts.surprisal.reshape(6, 16)[:, :-1], -log_p.numpy() / np.log(2), rtol=1e-5
    )
    assert np.isnan(acts.surprisal.reshape(6, 16)[:, -1]).all()


def test_max_tokens_subsamples_the_same_rows_in_every_layer(random_tokens):
    model = make_tiny_model("gpt_neox")
    full = collect_activations(model, random_tokens[:8], VOCAB, batch_size=3)
    some = collect_activations(model, random_tokens[:8], VOCAB, batch_size=3, max_tokens=50)
    assert some.n_tokens == 50
    rows = some.sequence * 16 + some.position
    assert len(np.unique(rows)) == 50
    for layer_full, layer_some in zip(full.layers, some.layers, strict=True):
        np.testing.assert_allclose(layer_some, layer_full[rows], atol=1e-6)
    np.testing.assert_array_equal(some.input_ids, random_tokens[:8].ravel()[rows])


def test_non_finite_tokens_are_dropped_and_too_many_abort(arch, random_tokens):
    model = make_tiny_model(arch)
    last_block = residual_modules(model)[0][-1]

    def poison(module, args, output):  # overflow in one token of each batch: (0, 5)
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[0, 5] = float("nan")

    handle = last_block.register_forward_hook(poison)
    try:
        acts = collect_activations(model, random_tokens, VOCAB, batch_size=16)  # 4 of 1024
        with pytest.raises(ValueError, match="non-finite"):
            collect_activations(model, random_tokens[:8], VOCAB, batch_size=1)  # 8 of 128
    finally:
        handle.remove()
    assert acts.n_tokens == random_tokens.size - 4
    assert all(np.isfinite(layer).all() for layer in acts.layers)
    dropped = set(range(0, 64, 16))
    assert not np.any(np.isin(acts.sequence, list(dropped)) & (acts.position == 5))
    assert np.sum(acts.position == 5) == 60


def test_token_embeddings_are_raw_input_embeddings(arch):
    model = make_tiny_model(arch)
    ids = np.array([3, 0, 63, 3])
    emb = token_embeddings(model, ids)
    np.testing.assert_array_equal(emb, model.get_input_embeddings().weight.detach().numpy()[ids])


COLUMNS = [
    "layer",
    "n_fit",
    "n_eval",
    "out_corr",
    "out_xent",
    "out_xent_model",
    "in_recall1",
    "in_recall5",
    "in_recall10",
    "in_surprisal",
    "in_rotation",
    "in_scaling",
    "out_rotation",
    "out_scaling",
    "secondlast_rotation",
    "secondlast_scaling",
]


def test_fit_lens_end_to_end(arch, cyclic_tokens, caplog):
    model = make_tiny_model(arch)
    train = collect_activations(model, cyclic_tokens[:64], VOCAB, batch_size=16)
    evaluation = collect_activations(model, cyclic_tokens[64:], VOCAB, batch_size=16)
    with caplog.at_level(logging.INFO, logger="bigram_subnetworks.lens"):
        table = fit_lens(train, evaluation, model, VOCAB, batch_tokens=100)
    # scoring reports its progress: the first and the last of the 512 eval tokens' 6 chunks
    assert [m.split(" |")[0] for m in caplog.messages if m.startswith("lens scoring")] == [
        "lens scoring chunk 1/6",
        "lens scoring chunk 6/6",
    ]
    assert list(table.columns) == COLUMNS
    assert table["layer"].tolist() == [0, 1, 2]
    assert (table["n_fit"] == 64 * 16).all() and (table["n_eval"] == 32 * 16).all()
    last = table.iloc[-1]
    # mapping the final layer to itself: the lens reproduces the model's own surprisal
    assert last["out_corr"] > 0.99
    assert last["out_rotation"] == pytest.approx(0.0, abs=1.0)
    assert last["out_scaling"] == pytest.approx(1.0, abs=0.1)
    own_nats = evaluation.surprisal[evaluation.has_next].mean() * np.log(2)
    assert last["out_xent"] == pytest.approx(own_nats, rel=0.02)
    # layer 0 is E[token] + (GPT-2) position: the "in" map recovers the current token
    first = table.iloc[0]
    assert first["in_recall1"] > 0.9
    assert first["in_rotation"] == pytest.approx(0.0, abs=1.0)  # h_0 → E[token] is ≈ identity
    assert first["in_recall1"] <= first["in_recall5"] <= first["in_recall10"] <= 1
    assert table[COLUMNS[3:]].notna().all().all()
    assert (table[[c for c in COLUMNS if "rotation" in c]] <= 180).all().all()


def test_fit_lens_under_a_mask_uses_the_masked_model(arch, cyclic_tokens):
    """Conditions are applied by the caller: a random half mask changes the activations."""
    model = make_tiny_model(arch)
    tokens = cyclic_tokens[:32]
    full = collect_activations(model, tokens, VOCAB, batch_size=16)
    generator = torch.Generator().manual_seed(0)
    half = Mask(
        {
            name: torch.rand(weight.shape, generator=generator) < 0.5
            for name, weight in maskable_parameters(model).items()
        }
    )
    with apply_mask(model, half):
        masked = collect_activations(model, tokens, VOCAB, batch_size=16)
        table = fit_lens(masked, masked, model, VOCAB)
    np.testing.assert_array_equal(full.layers[0], masked.layers[0])
    assert not np.allclose(full.layers[-1], masked.layers[-1])
    assert table.iloc[-1]["out_corr"] > 0.99


def test_recall_hits_equal_brute_force_ranks_with_ties():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 4, (200, 12), generator=generator).float()  # many ties
    ids = torch.randint(0, 12, (200,), generator=generator)
    ranks = (logits > logits.gather(-1, ids[:, None])).sum(-1)
    ks = (1, 5, 10, 20)  # 20 > the 12 columns: every token ranks below it
    expected = {k: int((ranks < k).sum()) for k in ks}
    assert recall_hits(logits, ids, ks) == expected
    assert expected[20] == 200 and 0 < expected[1] < expected[5] < 200
