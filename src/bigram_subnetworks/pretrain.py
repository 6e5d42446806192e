"""Pretraining a small causal LM from scratch with log-spaced checkpoints.

The paper studies bigram subnetworks across Pythia's log-spaced pretraining checkpoints (step 0,
128, 256, 512, 1000, …; docs/method.md §11). The embedded default has no hub access, so it
pretrains tiny models of the registry's families (GPT-NeoX, GPT-2, the Llama layout) here and
saves checkpoints at log-spaced steps.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .architectures import REGISTRY
from .atomic import atomic_path
from .resume import Resume, rng_states, set_rng_states
from .runtime import autocast, default_device, seeded_batches
from .settings import ModelShape, PretrainConfig, configs_from_dict  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("step", "train_loss", "eval_loss", "lr", "ms_per_step")
MIN_LR_FRACTION = 0.1


def build_model(shape: ModelShape, vocab_size: int, seed: int) -> PreTrainedModel:
    """A freshly initialised model of the family's layout (`ArchSpec.build`); the same seed
    gives identical weights (checkpoint 0)."""
    torch.manual_seed(seed)
    return REGISTRY[shape.arch].build(shape, vocab_size)


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to 10% of it at the last step (Pythia's
    schedule shape)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * step / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.learning_rate * (MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * cosine)


def _next_token_xent(model: PreTrainedModel, ids: torch.Tensor, reduction: str) -> torch.Tensor:
    """Cross-entropy (nats) of every position's prediction of the following token."""
    with autocast(ids.device):
        logits = model(input_ids=ids).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction=reduction
    )


def _device_of(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def eval_loss(model: PreTrainedModel, tokens: np.ndarray, batch_size: int) -> float:
    """Mean next-token cross-entropy in nats over all positions of ``tokens``; leaves the
    model's train/eval mode as it found it."""
    if len(tokens) == 0:
        raise ValueError("no evaluation sequences")
    device, was_training = _device_of(model), model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(tokens), batch_size):
                chunk = np.asarray(tokens[start : start + batch_size], dtype=np.int64)
                ids = torch.from_numpy(chunk).to(device)
                total += float(_next_token_xent(model, ids, reduction="sum"))
                count += ids.shape[0] * (ids.shape[1] - 1)
    finally:
        model.train(was_training)
    return total / count


def _optimizer(model: PreTrainedModel, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with betas (0.9, 0.95) as in Pythia; matrices decay, biases and norms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95))


def _train_step(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer, batch: torch.Tensor, lr: float
) -> float:
    """One update; returns the batch's mean training loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = _next_token_xent(model, batch, reduction="mean")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def _check_tokens(name: str, tokens: np.ndarray, model: PreTrainedModel) -> None:
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise ValueError(f"{name} must be [n_sequences, seq_len ≥ 2], got shape {tokens.shape}")
    vocab, positions = model.config.vocab_size, model.config.max_position_embeddings
    if int(tokens.max()) >= vocab:
        raise ValueError(f"{name} holds token id {int(tokens.max())} ≥ vocab size {vocab}")
    if tokens.shape[1] > positions:
        raise ValueError(f"{name} sequences of {tokens.shape[1]} exceed {positions} positions")


class _Window:
    """Training losses and step times since the last report."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.ms: list[float] = []

    def add(self, loss: float, ms: float) -> None:
        self.losses.append(loss)
        self.ms.append(ms)

    def state(self) -> tuple[list[float], list[float]]:
        """What a resume snapshot keeps of the window."""
        return self.losses, self.ms

    def restore(self, state: tuple[list[float], list[float]]) -> None:
        self.losses, self.ms = list(state[0]), list(state[1])

    def drain(self) -> tuple[float, float]:
        """Mean loss and ms/step since the last drain (NaN when no step ran), then reset."""
        if not self.losses:
            return math.nan, math.nan
        means = float(np.mean(self.losses)), float(np.mean(self.ms))
        self.losses, self.ms = [], []
        return means


@dataclass
class _RunState:
    """What a pretraining run carries from step to step, and what its resume snapshot keeps:
    the history rows, the last eval loss, the loss windows since the last eval and log line, and
    the last step done (−1: none, not even the checkpoint at step 0)."""

    rows: list = field(default_factory=list)
    last_eval: float = math.nan
    since_eval: _Window = field(default_factory=_Window)
    since_log: _Window = field(default_factory=_Window)
    done: int = -1

    def snapshot(self, step: int, model, optimizer) -> dict[str, Any]:
        return {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng_states(), "rows": self.rows, "last_eval": self.last_eval,
            "since_eval": self.since_eval.state(), "since_log": self.since_log.state(),
        }  # fmt: skip

    @classmethod
    def restored(cls, saved: dict[str, Any] | None, model, optimizer) -> _RunState:
        state = cls()
        if saved is None:
            return state
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_states(saved["rng"])
        state.done, state.rows = saved["step"], list(saved["rows"])
        state.last_eval = saved["last_eval"]
        state.since_eval.restore(saved["since_eval"])
        state.since_log.restore(saved["since_log"])
        log.info("resumed after step %d", state.done)
        return state


def pretrain(
    model: PreTrainedModel,
    train_tokens: np.ndarray,
    eval_tokens: np.ndarray,
    cfg: PretrainConfig,
    save_checkpoint: Callable[[int, PreTrainedModel], None],
    device: torch.device | str | None = None,
    resume: Resume | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place, calling ``save_checkpoint(step, model)`` at every checkpoint step
    (0 = before any update). Returns one history row per evaluation: every ``eval_every`` steps
    and at every checkpoint step. Deterministic on CPU for a given seed. With ``resume``, the
    whole state is saved every ``resume.every`` steps and a run continues from the last snapshot
    (the checkpoints saved before it must still exist; the caller owns them and the snapshots)."""
    device = default_device(device)
    _check_tokens("train_tokens", train_tokens, model)
    _check_tokens("eval_tokens", eval_tokens, model)
    model.to(device)
    torch.manual_seed(cfg.seed)  # GPT-2's dropout draws from the global generator
    optimizer = _optimizer(model, cfg)
    eval_set, checkpoints = eval_tokens[: cfg.eval_sequences], set(cfg.checkpoint_steps)
    run = _RunState.restored(resume.load() if resume is not None else None, model, optimizer)
    # Step s ≥ 1 trains on batch s − 1.
    batches = seeded_batches(train_tokens, cfg.batch_size, cfg.seed, start=max(run.done, 0))
    for step in range(run.done + 1, cfg.steps + 1):
        lr = learning_rate(step, cfg)
        if step > 0:
            model.train()
            started = time.perf_counter()
            loss = _train_step(model, optimizer, next(batches).to(device), lr)
            if not math.isfinite(loss):
                raise FloatingPointError(f"pretraining diverged: loss {loss} at step {step}")
            ms = 1000 * (time.perf_counter() - started)
            run.since_eval.add(loss, ms)
            run.since_log.add(loss, ms)
        if step % cfg.eval_every == 0 or step in checkpoints:
            run.last_eval = eval_loss(model, eval_set, cfg.batch_size)
            train_loss, ms = run.since_eval.drain()
            run.rows.append((step, train_loss, run.last_eval, lr, ms))
        if step in checkpoints:
            save_checkpoint(step, model)
        if step % cfg.log_every == 0:
            train_loss, ms = run.since_log.drain()
            log.info("step %d | loss %.3f | eval %.2f | lr %.1e | %.0f ms/step",
                     step, train_loss, run.last_eval, lr, ms)  # fmt: skip
        if resume is not None and resume.due(step) and 0 < step < cfg.steps:
            resume.save(run.snapshot(step, model, optimizer))
    return pd.DataFrame(run.rows, columns=list(HISTORY_COLUMNS))


def save_checkpoint_dir(
    model: PreTrainedModel, directory: str | os.PathLike, tokenizer=None
) -> None:
    """``save_pretrained`` (model, and tokenizer if given), written atomically."""
    with atomic_path(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def pretrain_to_directory(
    shape: ModelShape,
    cfg: PretrainConfig,
    train_tokens: np.ndarray,
    eval_tokens: np.ndarray,
    tokenizer,
    directory: str | os.PathLike,
    resume: Resume | None = None,
) -> pd.DataFrame:
    """Pretrain a fresh model, saving each checkpoint with its tokenizer as `step{N}/` under
    ``directory``, so every revision loads on its own like a hub snapshot. With ``resume``, the
    checkpoints are collected beside the snapshots (so a killed run keeps them) and moved to
    ``directory`` at the end; the snapshots are then removed."""
    directory = Path(directory)
    work = directory if resume is None else resume.directory / "checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(shape, len(tokenizer), seed=cfg.seed)

    def save(step: int, trained: PreTrainedModel) -> None:
        save_checkpoint_dir(trained, work / f"step{step}", tokenizer)

    history = pretrain(model, train_tokens, eval_tokens, cfg, save, resume=resume)
    if resume is not None:
        if directory.exists():
            shutil.rmtree(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, directory)
        resume.clear()
    return history


def resume_for(
    directory: str | os.PathLike, every: int, shape: ModelShape, cfg: PretrainConfig, vocab: int
) -> Resume:
    """Snapshots of a pretraining run with these settings."""
    return Resume(
        directory, every, {"shape": asdict(shape), "pretrain": asdict(cfg), "vocab": vocab}
    )
