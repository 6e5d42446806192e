"""On a GPU, what the CPU tests cannot reach: bf16 autocast in a training step, the model put
back where it was, CUDA's random state in a resume snapshot, one card per job. Skipped where
CUDA is not available (`-m gpu` selects them; benchmarks/gpu.sh runs them on a GPU machine)."""

import numpy as np
import pytest
import torch

from bigram_subnetworks import find_bigram_subnetwork
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.resume import rng_states, set_rng_states
from bigram_subnetworks.runtime import working_model
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import MaskTrainingConfig, train_mask

from conftest import VOCAB, make_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
FAST = {"learning_rate": 0.1, "beta_growth": 1.05, "max_steps": 20, "batch_size": 8}


def _tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(64, 16))


def test_a_cuda_step_autocasts_to_bf16_and_trains_the_mask_on_the_card():
    model = make_tiny_model("llama")
    tokens = _tokens()
    bigrams = BigramModel(BigramCounts.count(tokens, VOCAB))
    target = BigramTarget(bigrams, device="cuda")
    result = train_mask(model, target, tokens, MaskTrainingConfig(lam=1.0, **FAST), "cuda")
    assert result.steps > 0 and np.isfinite(result.history["loss"]).all()
    assert all(t.device.type == "cpu" for t in result.mask.tensors.values())  # saved from here
    assert next(model.parameters()).device.type == "cpu"  # the caller's model is put back


def test_bf16_weights_come_back_bit_identical_from_the_card():
    model = make_tiny_model("gpt_neox").to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with working_model(model, "cuda") as device:
        assert device.type == "cuda" and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[n], p) and p.dtype == torch.bfloat16
               for n, p in model.named_parameters())  # fmt: skip


def test_the_cuda_random_state_is_in_a_snapshot_and_restored():
    states = rng_states()
    assert "cuda" in states
    first = torch.rand(4, device="cuda")
    set_rng_states(states)
    assert torch.equal(torch.rand(4, device="cuda"), first)


def test_the_library_call_finds_the_same_mask_size_on_the_card_and_the_cpu():
    """bf16 autocast on the card against fp32 on the CPU: the same data order and schedule give
    masks of similar size (not identical: bf16 rounds the products)."""
    tokens = _tokens(1)
    sizes = {}
    for device in ("cpu", "cuda"):
        model = make_tiny_model("gpt_neox")
        found = find_bigram_subnetwork(model, tokens=tokens, lam=1.0, device=device, **FAST)
        sizes[device] = found.mask.density
    assert abs(sizes["cpu"] - sizes["cuda"]) < 0.1
