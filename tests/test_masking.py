"""Mask algebra, continuous sparsification math, and the two ways of applying a mask."""

import copy
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.masking import (
    ContinuousSparsification,
    Mask,
    apply_mask,
    forward_with,
    masked_forward,
)

from conftest import make_tiny_model


def _shapes(model):
    return {n: w.shape for n, w in maskable_parameters(model).items()}


def _random_mask(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(s, generator=g) < density for n, s in _shapes(model).items()})


def test_algebra(tiny_model):
    m = _random_mask(tiny_model)
    full, empty = Mask.full(m.shapes), Mask.empty(m.shapes)
    assert (m | ~m).equals(full)
    assert (m & ~m).equals(empty)
    assert (m & full).equals(m)
    assert m.n_kept + (~m).n_kept == m.n_total
    shuffled = m.shuffled(torch.Generator().manual_seed(1))
    assert shuffled.per_tensor() == m.per_tensor()
    assert not shuffled.equals(m)


def test_save_load_round_trip(tiny_model, tmp_path):
    m = _random_mask(tiny_model)
    m.save(tmp_path / "mask.safetensors", meta={"model": "x"})
    assert Mask.load(tmp_path / "mask.safetensors").equals(m)
    assert not list(tmp_path.glob(".*tmp*"))


def test_masks_are_stored_one_bit_per_weight_and_bool_files_still_load(tmp_path):
    generator = torch.Generator().manual_seed(0)
    shapes = {"a": (300, 77), "b": (5,), "c": (0, 3)}  # sizes not divisible by 8, and empty
    mask = Mask({n: torch.rand(s, generator=generator) < 0.3 for n, s in shapes.items()})
    mask.save(tmp_path / "packed.safetensors")
    loaded = Mask.load(tmp_path / "packed.safetensors")
    assert loaded.equals(mask) and {n: tuple(t.shape) for n, t in loaded.tensors.items()} == shapes
    stored = load_file(tmp_path / "packed.safetensors")
    assert stored["a"].dtype == torch.uint8 and stored["a"].numel() == -(-300 * 77 // 8)
    save_file(dict(mask.tensors), tmp_path / "bools.safetensors")  # the format before
    assert Mask.load(tmp_path / "bools.safetensors").equals(mask)
    bools, packed = (tmp_path / f"{k}.safetensors" for k in ("bools", "packed"))
    assert packed.stat().st_size < bools.stat().st_size / 6


def test_loading_garbage_names_the_file(tmp_path):
    path = tmp_path / "mask.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"cannot read mask file .*mask\.safetensors"):
        Mask.load(path)


def test_mask_for_the_wrong_model_is_refused():
    neox, gpt2 = make_tiny_model("gpt_neox"), make_tiny_model("gpt2")
    with pytest.raises(ValueError, match="is not in the model"):
        Mask.full(_shapes(neox)).check_matches(gpt2)
    bigger = make_tiny_model("gpt_neox", vocab_size=64, layers=2)
    wrong_shape = {
        n: torch.ones(s[0], s[1] + 1, dtype=torch.bool) for n, s in _shapes(neox).items()
    }
    with pytest.raises(ValueError, match="has shape"):
        Mask(wrong_shape).check_matches(bigger)


def test_full_mask_reproduces_logits_exactly(tiny_model):
    ids = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(0))
    plain = tiny_model(input_ids=ids).logits
    full = Mask.full(_shapes(tiny_model))
    masked = masked_forward(tiny_model, full.tensors, input_ids=ids).logits
    assert torch.equal(plain, masked)


def test_empty_mask_equals_zeroed_weights(tiny_model):
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    zeroed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for name in _shapes(zeroed):
            zeroed.get_parameter(name).zero_()
    empty = Mask.empty(_shapes(tiny_model))
    masked = masked_forward(tiny_model, empty.tensors, input_ids=ids).logits
    torch.testing.assert_close(masked, zeroed(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_apply_mask_agrees_with_masked_forward_and_restores(tiny_model):
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    m = _random_mask(tiny_model)
    before = {n: p.clone() for n, p in tiny_model.named_parameters()}
    expected = masked_forward(tiny_model, m.tensors, input_ids=ids).logits
    with apply_mask(tiny_model, m):
        torch.testing.assert_close(tiny_model(input_ids=ids).logits, expected)
    with pytest.raises(RuntimeError, match="boom"), apply_mask(tiny_model, m):
        raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())


def test_continuous_sparsification_math(tiny_model):
    weights = maskable_parameters(tiny_model)
    name = next(iter(weights))
    with torch.no_grad():
        weights[name][0, 0] = 0.0
    cs = ContinuousSparsification(weights)
    soft = cs.soft()
    assert soft[name][0, 1] == 0.5
    assert soft[name][0, 0] < 1e-6  # exactly-zero weights start off
    expected = sum(s.sum() for s in soft.values()) / sum(w.numel() for w in weights.values())
    assert torch.isclose(cs.penalty(soft), expected)
    cs.anneal(1.5)
    cs.anneal(2.0)
    assert float(cs.beta) == 3.0
    with torch.no_grad():
        cs.scores[0][0, 1] = 0.3
        cs.scores[0][0, 2] = -0.3
    hard = cs.hard().tensors[name]
    assert hard[0, 1] and not hard[0, 2] and not hard[0, 0]
    restored = ContinuousSparsification(weights)
    restored.load_state_dict(cs.state_dict())
    assert float(restored.beta) == 3.0


def _random_scores(cs: ContinuousSparsification, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in cs.scores:
            s.copy_(torch.randn(s.shape, generator=generator))


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_score_gradients_equal_autograd_through_the_soft_mask(tiny_model, micro_batches):
    """`masked_weights` + `backward_scores` (the training step's fused chain rule) give the
    gradient of CE(masked model) + λ·Σσ(βs)/|M| that autograd computes through `soft`, with
    the loss split over micro-batches."""
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    weights = maskable_parameters(tiny_model)
    cs = ContinuousSparsification(weights)
    _random_scores(cs)
    cs.anneal(1.7)
    ids = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(2))
    lam = 3.0

    def xent(logits, micro):
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), micro[:, 1:].reshape(-1)
        )

    soft = cs.soft()
    loss = xent(masked_forward(tiny_model, soft, input_ids=ids).logits, ids)
    (loss + lam * cs.penalty(soft)).backward()
    expected = [s.grad.clone() for s in cs.scores]
    cs.zero_grad(set_to_none=True)

    masked, penalty = cs.masked_weights(weights)
    assert penalty == pytest.approx(float(cs.penalty(soft).detach()), rel=1e-6)
    for micro in ids.split(len(ids) // micro_batches):
        logits = forward_with(tiny_model, masked, input_ids=micro).logits
        (xent(logits, micro) / micro_batches).backward()
    cs.backward_scores(weights, lam)
    for s, grad in zip(cs.scores, expected, strict=True):
        torch.testing.assert_close(s.grad, grad, rtol=1e-5, atol=1e-8)
    assert all(m.grad is None for m in masked.values())


def test_late_soft_masks_leave_no_subnormal_masked_weights(tiny_model):
    """Late in training (β ≈ 373) scores near −88/β give soft masks below fp32's smallest normal
    number, where x86 matrix products slow down tens of times: the step's masked weights are then
    exactly 0, and its forward equals the one through the unthresholded soft mask."""
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    weights = maskable_parameters(tiny_model)
    cs = ContinuousSparsification(weights)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        cs.beta.fill_(372.8)
        for s in cs.scores:
            beta_s = torch.where(torch.rand(s.shape, generator=generator) < 0.5, -88.0, 2.0)
            s.copy_(beta_s / 372.8)
    tiny = torch.finfo(torch.float32).tiny
    soft = cs.soft()
    assert any(
        ((m > 0) & (m < tiny)).any() for m in soft.values()
    )  # the unthresholded mask has them
    masked, _ = cs.masked_weights(weights)
    for name, w in masked.items():
        assert not ((w != 0) & (w.abs() < tiny)).any(), name
        assert torch.equal(w == 0, (cs.scores[cs.names.index(name)] < 0) | (weights[name] == 0))
    ids = torch.randint(0, 64, (2, 8), generator=generator)
    logits = forward_with(tiny_model, masked, input_ids=ids).logits
    expected = masked_forward(tiny_model, soft, input_ids=ids).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_decision_counts_equal_thresholds_on_the_soft_mask(tiny_model):
    cs = ContinuousSparsification(maskable_parameters(tiny_model))
    _random_scores(cs, seed=3)
    cs.anneal(2.5)
    soft = torch.cat([m.flatten() for m in cs.soft().values()]).detach()
    on, undecided = cs.decision_counts()
    assert on == int((soft > 0.9).sum()) > 0
    assert undecided == int(((soft >= 0.1) & (soft <= 0.9)).sum()) > 0


def test_a_partial_mask_applies_with_a_warning():
    """Two layers of three: only the named matrices are masked, and the caller is told."""
    model = make_tiny_model("gpt2", layers=3)
    weights = maskable_parameters(model)
    partial = Mask({n: torch.zeros_like(w, dtype=torch.bool) for n, w in weights.items()
                    if ".h.2." not in n})  # fmt: skip
    warning = pytest.warns(UserWarning, match=r"covers \d+ of the model's \d+ maskable weight")
    with warning, apply_mask(model, partial):
        assert all(torch.count_nonzero(weights[n]) == 0 for n in partial.tensors)
        assert all(torch.count_nonzero(w) > 0 for n, w in weights.items() if ".h.2." in n)


def test_a_saved_mask_is_readable_as_any_new_file_is(tmp_path):
    """safetensors writes owner-only files; a mask in a shared results directory must be
    readable by whoever may read the directory's other files (0666 less the umask)."""
    mask = Mask({"w": torch.ones(3, 5, dtype=torch.bool)})
    path = tmp_path / "mask.safetensors"
    previous = os.umask(0o022)
    try:
        mask.save(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
