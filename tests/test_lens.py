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
    dominant_rotation,
    eigen_rotations,
    fit_lens,
    fit_linear_maps,
    linear_cka,
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


def _planted(theta: float, rank: int, d: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Q B Qᵀ + noise · G/√d: B rotates the first ``rank`` dimensions (2×2 blocks) by ``theta``
    and zeroes the rest, Q a random orthonormal basis, G standard Gaussian (its eigenvalues fill
    a disk of radius ≈ ``noise``). theta = 0 is a rank-``rank`` identity (a projection)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    b = np.zeros((d, d))
    for k in range(0, rank, 2):
        b[k : k + 2, k : k + 2] = _rotation(theta)
    return q @ b @ q.T + noise * rng.normal(size=(d, d)) / np.sqrt(d)


def test_the_papers_rotation_fails_on_a_low_rank_identity_and_the_dominant_one_does_not():
    """The review's case: an identity on the top 64 of 576 directions rotates nothing, but the
    phases of its 512 near-zero eigenvalues are noise, so their median is ~80°."""
    for noise in (1e-3, 0.01, 0.05):
        w = _planted(0.0, 64, 576, noise)
        assert rotation_summary(w)[0] > 75  # measured: 79.9°, 79.5°, 78.9°
        rotation, scaling, kept = dominant_rotation(w)
        assert rotation == pytest.approx(0.0, abs=0.5) and scaling == pytest.approx(1.0, abs=0.05)
        assert kept == 64


@pytest.mark.parametrize("theta", [15.0, 30.0, 60.0, 120.0])
def test_dominant_rotation_recovers_a_planted_rotation(theta):
    full = _planted(theta, 576, 576)
    assert rotation_summary(full)[0] == pytest.approx(theta, abs=1e-6)  # full rank: both agree
    assert dominant_rotation(full) == pytest.approx((theta, 1.0, 576), abs=1e-6)
    low = _planted(theta, 64, 576)
    assert abs(rotation_summary(low)[0] - theta) > 15  # measured ~80° at every θ
    rotation, _, kept = dominant_rotation(low)
    assert rotation == pytest.approx(theta, abs=1e-3) and kept == 64


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.1])
def test_dominant_rotation_is_robust_to_noise_below_the_cut_off(noise):
    """Noise eigenvalues fill a disk of radius ≈ noise; below the cut-off (0.1 × the largest
    |λ| = 1) they are left out and the planted eigenvalues move by ~noise. The all-eigenvalue
    median is ~80° throughout; a modulus-weighted mean |arg| (the alternative not chosen) drifts
    to 33°, 42°, 50° at these noise levels (θ = 30°). At noise 0.2, above the cut-off, the noise
    eigenvalues get in and the dominant rotation fails too (~75°)."""
    for theta in (30.0, 60.0):
        w = _planted(theta, 64, 576, noise, seed=1)
        rotation, _, kept = dominant_rotation(w)
        assert rotation == pytest.approx(theta, abs=1.0) and kept == 64
        assert rotation_summary(w)[0] > 75
        assert dominant_rotation(_planted(theta, 576, 576, noise))[0] == pytest.approx(theta, abs=1)


def test_dominant_rotation_of_a_fitted_low_rank_identity():
    """As the lens meets it: a ridge map fitted from activations with a decaying spectrum to their
    projection on the top 32 of 256 directions (plus a little target noise)."""
    rng = np.random.default_rng(0)
    d, rank = 256, 32
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(4000, d)) * np.exp(-np.arange(d) / 20)) @ q.T
    y = x @ (q[:, :rank] @ q[:, :rank].T) + 0.01 * rng.normal(size=(4000, d))
    coef = fit_linear_maps(x, {"out": y})["out"].coef
    assert rotation_summary(coef)[0] > 60
    rotation, scaling, kept = dominant_rotation(coef)
    assert rotation < 2 and scaling == pytest.approx(1.0, abs=0.1) and kept <= rank


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
    assert list(table.columns) == ["layer_i", "layer_j", "similarity", "cka"]
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


def _cka_by_gram_matrices(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA as the cosine of the centred token Gram matrices (Kornblith et al. 2019)."""
    ka, kb = ((x - x.mean(0)) @ (x - x.mean(0)).T for x in (a.astype(float), b.astype(float)))
    return float(np.sum(ka * kb) / (np.linalg.norm(ka) * np.linalg.norm(kb)))


def test_linear_cka_matches_the_gram_matrix_definition_in_any_chunking():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    layers = [base, np.tanh(base) + rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) + 5]
    acts = _synthetic_activations([layer.astype(np.float32) for layer in layers])
    cka = linear_cka(acts)
    brute = [[_cka_by_gram_matrices(a, b) for b in acts.layers] for a in acts.layers]
    np.testing.assert_allclose(cka, brute, rtol=1e-10)
    for route in ("features", "tokens"):  # both exact, in whole or in chunks of 7 tokens
        np.testing.assert_allclose(linear_cka(acts, route), cka, rtol=1e-12)
        np.testing.assert_allclose(linear_cka(acts, route, chunk=7), cka, rtol=1e-12)
    with pytest.raises(ValueError, match="route"):
        linear_cka(acts, "gram")
    np.testing.assert_allclose(np.diag(cka), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(cka, cka.T)


def _massive(n: int, d: int, seed: int, massive: np.ndarray) -> np.ndarray:
    """Unit Gaussian activations whose dimension 0 is replaced by ``massive``."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] = massive
    return x.astype(np.float32)


def test_a_shared_massive_dimension_saturates_the_covariance_cosine_but_not_cka():
    """Two unrelated activation sets whose dimension 0 has 100× the standard deviation of the
    others (a massive activation), on unrelated tokens: the covariances are both ≈ 10⁴·e₀e₀ᵀ, so
    their cosine is ≈ 1; CKA sees unrelated tokens (measured: cosine 0.999995, CKA 9·10⁻⁴)."""
    rng = np.random.default_rng(1)
    n, d = 2000, 64
    a = _massive(n, d, 2, 100 * rng.normal(size=n))
    b = _massive(n, d, 3, 100 * rng.normal(size=n))
    table = covariance_similarity(_synthetic_activations([a, b]))
    pair = table[(table["layer_i"] == 0) & (table["layer_j"] == 1)].iloc[0]
    assert pair["similarity"] > 0.999 and pair["cka"] < 0.01
    # without the massive dimension the cosine is still high (isotropic covariances look alike)
    # and CKA at its floor for unrelated sets, ≈ d/n
    plain = covariance_similarity(_synthetic_activations([a[:, 1:], b[:, 1:]])).iloc[1]
    assert plain["similarity"] > 0.9 and plain["cka"] < 2 * d / n
    # identical sets: CKA 1
    assert linear_cka(_synthetic_activations([a, a.copy()]))[0, 1] == pytest.approx(1.0, abs=1e-12)


def test_cka_is_still_dominated_by_a_massive_dimension_on_the_same_tokens():
    """The documented limit (docs/method.md §10): when the massive values fall on the same tokens
    in both layers (attention-sink positions), that shared direction is real shared structure of
    the token Gram matrices and dominates CKA too."""
    sink = np.zeros(2000)
    sink[::128] = 1000.0  # the first position of every 128-token sequence
    a, b = _massive(2000, 64, 2, sink), _massive(2000, 64, 3, sink)
    assert linear_cka(_synthetic_activations([a, b]))[0, 1] > 0.99


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    y = np.tanh(x) + 0.5 * rng.normal(size=(500, 8))
    q1, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    q2, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    layers = [x, y, 3.0 * x @ q1 + 2.0, 0.1 * y @ q2 - 1.0]
    cka = linear_cka(_synthetic_activations(layers))  # float32 storage: tolerance 1e-6
    assert cka[0, 2] == pytest.approx(1.0, abs=1e-6) and cka[1, 3] == pytest.approx(1.0, abs=1e-6)
    assert cka[0, 1] < 0.99
    for i, j in [(0, 3), (2, 1), (2, 3)]:
        assert cka[i, j] == pytest.approx(cka[0, 1], abs=1e-6)


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
    *(
        f"{name}_{column}"
        for name in ("in", "out", "secondlast")
        for column in (
            "rotation",
            "scaling",
            "rotation_dominant",
            "scaling_dominant",
            "n_dominant",
        )
    ),
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
    assert last["out_rotation_dominant"] == pytest.approx(0.0, abs=1.0)
    assert last["out_scaling_dominant"] == pytest.approx(1.0, abs=0.1)
    assert 0 < last["out_n_dominant"] <= 32
    own_nats = evaluation.surprisal[evaluation.has_next].mean() * np.log(2)
    assert last["out_xent"] == pytest.approx(own_nats, rel=0.02)
    # layer 0 is E[token] + (GPT-2) position: the "in" map recovers the current token
    first = table.iloc[0]
    assert first["in_recall1"] > 0.9
    assert first["in_rotation"] == pytest.approx(0.0, abs=1.0)  # h_0 → E[token] is ≈ identity
    assert first["in_recall1"] <= first["in_recall5"] <= first["in_recall10"] <= 1
    assert table[COLUMNS[3:]].notna().all().all()
    assert (table[[c for c in COLUMNS if "rotation" in c]] <= 180).all().all()
    assert (table["in_n_dominant"] >= 1).all()


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
