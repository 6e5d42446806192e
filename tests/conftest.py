"""Shared fixtures: tiny real Hugging Face models built from configs (never downloaded)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
)

VOCAB = 64
ARCHS = ("gpt_neox", "gpt2", "llama")
# Every Hugging Face model type the Llama-layout family covers, each tested on a tiny real model.
LLAMA_LAYOUT_TYPES = (
    "llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "gemma", "gemma2", "gemma3_text",
    "smollm3",
)  # fmt: skip
# Families checked by tests/test_architectures.py only (the `arch` fixture runs the others'
# whole suite).
MORE_ARCHS = ("phi3", "gptj", "opt")

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads
# that wait for each other make a 17 ms masked step take 800 ms (measured).
torch.set_num_threads(1)


def make_llama_layout(
    model_type: str = "llama", vocab_size: int = VOCAB, seed: int = 0, layers: int = 2
):
    """A tiny real model of a Llama-layout class: 4 query heads over 2 key/value heads
    (grouped-query attention), gated MLP, tied embeddings, token ids inside the vocabulary."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return AutoModelForCausalLM.from_config(config).eval()


def make_tiny_model(arch: str, vocab_size: int = VOCAB, seed: int = 0, layers: int = 2):
    if arch == "llama":
        return make_llama_layout("llama", vocab_size, seed, layers)
    torch.manual_seed(seed)
    if arch in MORE_ARCHS:
        return _make_more(arch, vocab_size, layers).eval()
    if arch == "gpt_neox":
        config = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            initializer_range=0.2,
        )
        model = GPTNeoXForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=layers,
            n_head=4,
            n_inner=64,
            n_positions=64,
            initializer_range=0.2,
        )
        model = GPT2LMHeadModel(config)
    return model.eval()


def _make_more(arch: str, vocab_size: int, layers: int):
    """Phi-3 (fused [q; k; v] rows with 2 key/value heads for 4 query heads, fused [gate; up]),
    GPT-J (an unembedding with a bias) and OPT (an embedding narrower than the blocks, so the
    decoder's project_in/project_out are there, as in OPT-350m, but pre-LayerNorm)."""
    if arch == "phi3":
        config = AutoConfig.for_model(
            "phi3",
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            original_max_position_embeddings=64,
            initializer_range=0.2,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
    elif arch == "gptj":
        config = AutoConfig.for_model(
            "gptj",
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=layers,
            n_head=4,
            n_inner=64,
            n_positions=64,
            rotary_dim=4,
            initializer_range=0.2,
            bos_token_id=None,
            eos_token_id=None,
        )
    else:
        config = AutoConfig.for_model(
            "opt",
            vocab_size=vocab_size,
            hidden_size=32,
            word_embed_proj_dim=16,
            num_hidden_layers=layers,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            init_std=0.2,
            dropout=0.0,
            attention_dropout=0.0,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(arch):
    return make_tiny_model(arch)


@pytest.fixture
def cyclic_tokens() -> np.ndarray:
    """A learnable stream: each sequence walks a fixed permutation cycle from a random start, so
    every token has exactly one successor and the bigram distribution is deterministic."""
    rng = np.random.default_rng(0)
    successor = rng.permutation(VOCAB)
    starts = rng.integers(0, VOCAB, size=96)
    seqs = np.empty((96, 16), dtype=np.int64)
    seqs[:, 0] = starts
    for t in range(1, 16):
        seqs[:, t] = successor[seqs[:, t - 1]]
    return seqs


@pytest.fixture
def random_tokens() -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, size=(64, 16))


class RunsCode:
    """Unpickling this runs `touch pwned` in the working directory: a loader that unpickles it
    has executed code from a file."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory, checked afterwards for the mark `RunsCode` leaves."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / "pwned").exists(), "a loader ran code from a file"


def hub_snapshot_dir(cache: Path, repo_id: str, revision: str = "main") -> Path:
    """A snapshot folder in the layout `huggingface_hub` reads offline (refs/<revision> names a
    commit whose snapshot holds the files: plain files here, links into blobs/ in a real cache).
    Callers write the repository's files into it."""
    storage = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def released_dict(model, seed: int = 0, density: float = 0.1) -> dict:
    """What the authors' `get_mask_dict` pickles: {HF parameter name: bool array} and the model
    name."""
    from bigram_subnetworks.architectures import maskable_parameters

    rng = np.random.default_rng(seed)
    masks = {
        name: rng.random(tuple(weight.shape)) < density
        for name, weight in maskable_parameters(model).items()
    }
    return {**masks, "orig_model_name": "EleutherAI/pythia-70m"}
