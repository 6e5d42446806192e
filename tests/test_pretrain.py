"""Pretraining from scratch: model shapes, seeding, schedule, checkpoints, determinism."""

from __future__ import annotations

import copy
import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from bigram_subnetworks.pretrain import (
    HISTORY_COLUMNS,
    ModelShape,
    PretrainConfig,
    build_model,
    eval_loss,
    learning_rate,
    pretrain,
    save_checkpoint_dir,
)

VOCAB = 64
SEQ = 16
ARCHS = ("gpt_neox", "gpt2", "llama")
CHECKPOINTS = (0, 1, 2, 4, 8, 16, 40)


def tiny_shape(arch: str) -> ModelShape:
    kv_heads = 2 if arch == "llama" else None  # grouped-query attention in the Llama layout
    return ModelShape(arch, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                      max_positions=SEQ, num_kv_heads=kv_heads)  # fmt: skip


def make_config(**overrides) -> PretrainConfig:
    values = dict(
        steps=40, batch_size=8, learning_rate=1e-2, warmup_steps=4, weight_decay=0.01,
        eval_every=10, eval_sequences=16, checkpoint_steps=CHECKPOINTS, seed=0, log_every=20,
    )  # fmt: skip
    return PretrainConfig(**{**values, **overrides})


def cyclic(n: int, seed: int) -> np.ndarray:
    """Sequences walking one fixed cycle through the vocabulary from random starts: every token
    has a single successor, so a model can drive the loss far below log(vocab)."""
    successor = np.random.default_rng(0).permutation(VOCAB)
    seqs = np.empty((n, SEQ), dtype=np.uint16)
    seqs[:, 0] = np.random.default_rng(seed).integers(0, VOCAB, size=n)
    for t in range(1, SEQ):
        seqs[:, t] = successor[seqs[:, t - 1]]
    return seqs


@pytest.fixture(scope="module")
def token_files(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """uint16 memmaps, as the tokenize rule writes them."""
    root = tmp_path_factory.mktemp("tokens")
    np.save(root / "train.npy", cyclic(128, seed=1))
    np.save(root / "eval.npy", cyclic(32, seed=2))
    return np.load(root / "train.npy", mmap_mode="r"), np.load(root / "eval.npy", mmap_mode="r")


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def expected_parameters(arch: str, v: int, h: int, layers: int, inner: int, pos: int) -> int:
    if arch == "llama":  # q, o: h×h; k, v: h×(2 heads of h/4); gate, up, down; 2 RMSNorms; tied
        block = 2 * h * h + 2 * h * (h // 2) + 3 * h * inner + 2 * h
        return v * h + layers * block + h
    block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * inner + inner) + (inner * h + h)
    if arch == "gpt_neox":  # untied embed_in and lm_head, no position embeddings (rotary)
        return 2 * v * h + layers * block + 2 * h
    return v * h + pos * h + layers * block + 2 * h  # tied lm_head


@pytest.mark.parametrize("arch", ARCHS)
def test_build_model_shape_and_parameter_count(arch):
    kv_heads = 2 if arch == "llama" else None
    model = build_model(ModelShape(arch, 48, 3, 4, 96, 32, kv_heads), vocab_size=100, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == expected_parameters(arch, v=100, h=48, layers=3, inner=96, pos=32)
    config = model.config
    assert config.model_type == arch and config.vocab_size == 100
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (48, 3, 4)
    assert config.max_position_embeddings == 32
    assert model.get_output_embeddings().weight.shape == (100, 48)
    if arch == "gpt_neox":  # Pythia: untied unembedding, parallel residual, 25% rotary
        assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
        assert config.use_parallel_residual
        assert config.rope_parameters["partial_rotary_factor"] == 0.25
    if arch == "llama":  # grouped-query attention, tied embeddings as in SmolLM2
        assert (config.num_key_value_heads, config.tie_word_embeddings) == (2, True)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_gives_identical_weights(arch):
    first, again = (weights(build_model(tiny_shape(arch), VOCAB, seed=3)) for _ in range(2))
    other = weights(build_model(tiny_shape(arch), VOCAB, seed=4))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="unknown arch 'bert'"):
        build_model(ModelShape("bert", 32, 2, 4, 64, 16), VOCAB, seed=0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"checkpoint_steps": (0, 10, 20)}, "final step"),
        ({"checkpoint_steps": (0, 20, 10, 40)}, "sorted"),
        ({"checkpoint_steps": (0, 10, 10, 40)}, "unique"),
        ({"checkpoint_steps": (-1, 40)}, r"\[0, steps"),
        ({"checkpoint_steps": (0, 40, 50)}, r"\[0, steps"),
        ({"steps": 0}, "steps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"warmup_steps": 41}, "warmup_steps"),
        ({"eval_sequences": 0}, "eval_sequences"),
    ],
)
def test_pretrain_config_rejects_bad_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        make_config(**overrides)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    cfg = make_config(steps=100, warmup_steps=10, checkpoint_steps=(0, 100))
    rates = [learning_rate(step, cfg) for step in range(101)]
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.5e-2)
    assert max(rates) == rates[10] == pytest.approx(1e-2)
    assert rates[100] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_eval_loss_restores_mode_and_accepts_memmaps(token_files):
    model = build_model(tiny_shape("gpt2"), VOCAB, seed=0)
    model.train()
    loss = eval_loss(model, token_files[1], batch_size=5)
    assert model.training
    assert loss == pytest.approx(math.log(VOCAB), abs=0.5)  # an untrained model is near uniform
    model.eval()
    assert eval_loss(model, token_files[1], batch_size=32) == pytest.approx(loss, rel=1e-5)
    assert not model.training


@pytest.fixture(scope="module")
def neox_run(token_files, tmp_path_factory):
    """One 40-step run whose checkpoints are saved to disk and snapshotted in memory."""
    root = tmp_path_factory.mktemp("checkpoints")
    saved: dict[int, PreTrainedModel] = {}

    def save(step: int, model: PreTrainedModel) -> None:
        saved[step] = copy.deepcopy(model).eval()
        save_checkpoint_dir(model, root / f"step{step}")

    model = build_model(tiny_shape("gpt_neox"), VOCAB, seed=0)
    history = pretrain(model, *token_files, make_config(), save, device="cpu")
    return history, saved, root


def test_pretraining_lowers_eval_loss_well_below_uniform(neox_run):
    history, _, _ = neox_run
    first, last = history["eval_loss"].iloc[0], history["eval_loss"].iloc[-1]
    assert first > 0.8 * math.log(VOCAB)
    assert last < 0.25 * math.log(VOCAB)


def test_history_has_one_row_per_eval_point(neox_run):
    history, _, _ = neox_run
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert history["step"].tolist() == [0, 1, 2, 4, 8, 10, 16, 20, 30, 40]
    assert math.isnan(history["train_loss"].iloc[0]) and math.isnan(history["ms_per_step"].iloc[0])
    assert history.drop(index=0).notna().all().all()
    assert history["lr"].iloc[0] == 0.0


def test_checkpoints_saved_exactly_at_configured_steps(neox_run):
    _, saved, root = neox_run
    assert tuple(saved) == CHECKPOINTS
    assert sorted(p.name for p in root.iterdir()) == sorted(f"step{s}" for s in CHECKPOINTS)


@pytest.mark.parametrize("step", [0, 8, 40])
def test_checkpoints_reload_with_identical_logits(neox_run, token_files, step):
    _, saved, root = neox_run
    reloaded = AutoModelForCausalLM.from_pretrained(root / f"step{step}").eval()
    ids = torch.from_numpy(np.asarray(token_files[1][:4], dtype=np.int64))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, saved[step](ids).logits, rtol=0, atol=0)


def test_first_checkpoint_is_the_initialisation(neox_run):
    _, saved, _ = neox_run
    init = weights(build_model(tiny_shape("gpt_neox"), VOCAB, seed=0))
    assert all(torch.equal(init[name], t) for name, t in weights(saved[0]).items())


@pytest.mark.parametrize("arch", ARCHS)
def test_pretraining_is_deterministic(arch, token_files):
    cfg = make_config(steps=5, eval_every=5, checkpoint_steps=(5,))
    runs = []
    for _ in range(2):
        model = build_model(tiny_shape(arch), VOCAB, seed=0)
        history = pretrain(model, *token_files, cfg, lambda step, m: None, device="cpu")
        runs.append((weights(model), history))
    (first, history), (again, history_again) = runs
    assert all(torch.equal(first[name], again[name]) for name in first)
    pd.testing.assert_series_equal(history["eval_loss"], history_again["eval_loss"])


def test_pretrain_logs_progress(token_files, caplog):
    cfg = make_config(steps=4, eval_every=2, checkpoint_steps=(4,), log_every=2)
    model = build_model(tiny_shape("gpt2"), VOCAB, seed=0)
    with caplog.at_level(logging.INFO, logger="bigram_subnetworks.pretrain"):
        pretrain(model, *token_files, cfg, lambda step, m: None, device="cpu")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("step 4 | loss ") and "ms/step" in line for line in lines)


def test_pretrain_rejects_tokens_outside_the_vocabulary(token_files):
    model = build_model(tiny_shape("gpt2"), vocab_size=32, seed=0)
    with pytest.raises(ValueError, match="vocab size 32"):
        pretrain(model, *token_files, make_config(), lambda step, m: None, device="cpu")


def test_save_checkpoint_dir_replaces_and_leaves_nothing_half_written(tmp_path: Path):
    model = build_model(tiny_shape("gpt2"), VOCAB, seed=0)
    target = tmp_path / "step0"
    save_checkpoint_dir(model, target)
    save_checkpoint_dir(model, target)
    assert [p.name for p in tmp_path.iterdir()] == ["step0"]
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()

    def killed(directory, **kwargs) -> None:
        Path(directory).mkdir()
        (Path(directory) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    model.save_pretrained = killed
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_dir(model, tmp_path / "step1")
    assert [p.name for p in tmp_path.iterdir()] == ["step0"]
