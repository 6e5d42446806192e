"""The mask-training loop: continuous sparsification against a target (docs/method.md §4).

loss = CE(target, masked model) + λ · Σσ(βs)/|M|; AdamW on the scores only; β ← β·growth after
every optimizer step; early stop when the undecided weights are < 1% of the kept ones; up to
`attempts` tries with different data orders, rejecting a try whose loss curve spikes; the final
mask is s > 0. No file I/O but the optional `Resume` snapshots: callers save the returned mask and
history.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .architectures import maskable_parameters
from .io import read_table
from .masking import ContinuousSparsification, Mask
from .progress import Progress, StepCallback
from .resume import Resume, rng_states, set_rng_states
from .runtime import autocast, default_device, flush_denormals, model_logits, seeded_batches
from .settings import SENTINELS, MaskTrainingConfig
from .targets import Target

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "attempt",
    "step",
    "xent",
    "penalty",
    "loss",
    "on_fraction",
    "undecided_fraction",
    "beta",
    "ms_per_step",
)


# How an attempt ended (docs/method.md §4): by the paper's early-stop rule (undecided weights
# < early_stop_fraction × the weights on, or none undecided), by running out of `max_steps`
# with weights still undecided, or on a non-finite loss. Only the first is a converged mask;
# `stable` is a separate verdict (no unrecovered loss spike). Sentinel masks are not trained.
ENDINGS = ("early_stop", "max_steps", "non_finite", "sentinel")
# What every mask's metrics row carries of its training (metrics.tsv, docs/method.md §4).
CONVERGENCE_KEYS = ("steps", "stable", "ended", "converged", "undecided_fraction")


@dataclass(frozen=True)
class TrainResult:
    """A trained mask, its history (every attempt), which attempt was kept and how it ended:
    ``stable`` (its loss curve passed the spike check, with ``reason``), ``ended`` (one of
    `ENDINGS`) and its last step's undecided weights, as a fraction of all maskable weights
    (``undecided_fraction``) and of the weights on (``undecided_to_on``, which the early-stop
    rule compares with ``early_stop_fraction``)."""

    mask: Mask
    history: pd.DataFrame
    attempt: int
    steps: int
    stable: bool
    reason: str
    ended: str = "sentinel"
    undecided_fraction: float = 0.0
    undecided_to_on: float = 0.0

    @property
    def converged(self) -> bool:
        """Whether training ended by the early-stop rule (a sentinel needs no training)."""
        return is_converged(self.ended)

    def summary(self) -> dict[str, Any]:
        """How training went, as meta.json and metrics.tsv record it (`outcome` is the spike
        check's reason)."""
        return {
            "attempt": self.attempt, "steps": self.steps, "stable": self.stable,
            "outcome": self.reason, "ended": self.ended, "converged": self.converged,
            "undecided_fraction": self.undecided_fraction,
            "undecided_to_on": self.undecided_to_on,
        }  # fmt: skip


def load_result(mask_file: str | os.PathLike, history_file: str | os.PathLike, meta: dict):
    """A trained mask as written by the `train_mask` rule (meta.json's `TrainResult.summary`)."""
    history = read_table(history_file)
    return TrainResult(
        Mask.load(mask_file), history, meta["attempt"], meta["steps"], meta["stable"],
        meta["outcome"], meta["ended"], meta["undecided_fraction"], meta["undecided_to_on"],
    )  # fmt: skip


def early_stop_rule(on: float, undecided: float, cfg: MaskTrainingConfig) -> bool:
    """The paper's early-stop rule (docs/method.md §4): undecided < early_stop_fraction × on,
    or nothing undecided (an all-off mask would otherwise run to max_steps: 0 < 0.01·0 never
    holds). Counts or fractions of the weights alike."""
    return undecided < cfg.early_stop_fraction * on or undecided == 0


def is_converged(ended: str) -> bool:
    """Whether a mask that ended so (`ENDINGS`) is final: by the early-stop rule, or a sentinel,
    which needs no training."""
    return ended in ("early_stop", "sentinel")


def ending(rows: Sequence[tuple], cfg: MaskTrainingConfig) -> tuple[str, float, float]:
    """How an attempt with these history rows ended (`ENDINGS`), and its last step's undecided
    weights as a fraction of all weights and of the weights on (inf when none is on but some
    are undecided). The same rule as `_stopped`, read back from the history."""
    last = dict(zip(HISTORY_COLUMNS, rows[-1], strict=True))
    on, undecided = last["on_fraction"], last["undecided_fraction"]
    to_on = undecided / on if on > 0 else (0.0 if undecided == 0 else math.inf)
    if not math.isfinite(last["xent"]):
        return "non_finite", undecided, to_on
    if early_stop_rule(on, undecided, cfg):
        return "early_stop", undecided, to_on
    return "max_steps", undecided, to_on


def sentinel_mask(model: nn.Module, label: str) -> Mask:
    """λ = −∞ keeps every maskable weight ('full'), λ = +∞ drops them all ('empty')."""
    if label not in SENTINELS:
        raise ValueError(f"{label!r} is not a sentinel λ label ({sorted(SENTINELS)})")
    shapes = {name: w.shape for name, w in maskable_parameters(model).items()}
    return Mask.full(shapes) if label == "full" else Mask.empty(shapes)


def is_stable(
    losses: np.ndarray, window: int, absolute: float, relative: float, recovery_steps: int
) -> tuple[bool, str]:
    """Reject a loss curve with an unrecovered spike (docs/method.md §4), following the authors'
    check (`check_loss_stability` in tylerachang/bigram-subnetworks,
    paper_code/utils/circuit_utils.py).

    Every loss from the second on (index i ≥ 1) is compared with the mean of the up to
    ``window`` losses before it (a window that grows from one loss until it is full, so the
    first steps are checked too). It is a spike if it is above that mean + ``absolute`` or above
    ``relative`` × that mean. A spike is tolerated only if some loss from the spike on, at an
    index below n − ``recovery_steps`` (n losses), is back at or below that mean; a spike at
    index ≥ n − ``recovery_steps`` is never tolerated. Spiking losses enter later windows like
    any other. Unlike the authors' check, a non-finite loss anywhere makes the curve unstable
    (in theirs a NaN is never a spike and makes every later mean NaN, so the curve passes). The
    reason names the 1-based step of the first unrecovered spike.
    """
    if window < 1:
        raise ValueError(f"the spike window must be ≥ 1 step, got {window}")
    losses = np.asarray(losses, dtype=float)
    if not np.all(np.isfinite(losses)):
        return False, "non-finite loss"
    last_recovery = len(losses) - recovery_steps  # recovery must come at an index below this
    for i in range(1, len(losses)):
        baseline = losses[max(0, i - window) : i].mean()
        spike = losses[i] > baseline + absolute or losses[i] > relative * baseline
        if spike and (i >= last_recovery or not np.any(losses[i:last_recovery] <= baseline)):
            return False, f"unrecovered loss spike at step {i + 1}"
    return True, "stable"


def _step(model, cs, target, optimizer, batch, cfg, device) -> tuple[float, float]:
    """One optimizer step. The masked weights W ⊙ σ(βs) are formed once and shared by every
    micro-batch (each backpropagates into their gradients, the loss divided by grad_accum), then
    `ContinuousSparsification.backward_scores` carries those gradients and the penalty's through
    σ(βs) to the scores. The caller grows β afterwards (docs/method.md §4)."""
    optimizer.zero_grad(set_to_none=True)
    weights = {name: model.get_parameter(name) for name in cs.names}
    masked, penalty = cs.masked_weights(weights)
    xent = 0.0
    for micro in batch.to(device).split(cfg.micro_batch):
        with autocast(device, cfg.precision):
            logits = model_logits(model, micro, masked)
        loss = target.cross_entropy(logits, micro) / cfg.grad_accum
        loss.backward()
        xent += float(loss.detach())
    cs.backward_scores(weights, cfg.lam)
    optimizer.step()
    return xent, penalty


def score_optimizer(cs: ContinuousSparsification, cfg: MaskTrainingConfig) -> torch.optim.AdamW:
    """AdamW on the scores only (docs/method.md §4: PyTorch's defaults, weight decay on the
    scores). The fused implementation updates 106M scores in one pass (4x faster than the default
    loop on the CPU, measured); it computes the same update."""
    return torch.optim.AdamW(
        cs.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
    )


def beta_growth(cfg: MaskTrainingConfig, undecided_fraction: float) -> float:
    """β's growth after a step with this share of the weights undecided: `beta_growth`, or
    `beta_growth_late` once the share is at most `late_undecided` (docs/method.md §4)."""
    if cfg.beta_growth_late is not None and undecided_fraction <= cfg.late_undecided:
        return cfg.beta_growth_late
    return cfg.beta_growth


def _history_row(attempt, step, xent, penalty, cfg, on, undecided, numel, beta, ms) -> tuple:
    """One row of `HISTORY_COLUMNS`."""
    loss = xent + cfg.lam * penalty
    return (attempt, step, xent, penalty, loss, on / numel, undecided / numel, beta, ms)


def _stopped(xent: float, on: int, undecided: int, step: int, attempt: int, cfg) -> bool:
    """Whether an attempt ends after this step (logging why): a non-finite loss, or
    `early_stop_rule`."""
    if not math.isfinite(xent):
        log.warning("attempt %d: non-finite loss at step %d, stopping it", attempt, step)
        return True
    if early_stop_rule(on, undecided, cfg):
        log.info("attempt %d: early stop at step %d (%d undecided)", attempt, step, undecided)
        return True
    return False


def train_attempt(
    model,
    target: Target,
    tokens: np.ndarray,
    cfg: MaskTrainingConfig,
    attempt: int,
    device: torch.device,
    start: dict[str, Any] | None = None,
    snapshot: Callable[[dict[str, Any]], None] | None = None,
    on_step: StepCallback | None = None,
) -> tuple[Mask, list[tuple]]:
    """One attempt from fresh scores (s = 0) with its own data order, or continued from
    ``start`` (an attempt's state as given to ``snapshot``, which is called every step and
    decides itself whether to save). ``on_step`` receives every step's history row as a dict.
    Returns the hard mask and one history row per step."""
    cs = ContinuousSparsification(maskable_parameters(model)).to(device)
    optimizer = score_optimizer(cs, cfg)
    done, rows = 0, []
    if start is not None:
        cs.load_state_dict(start["scores"])
        optimizer.load_state_dict(start["optimizer"])
        done, rows = start["step"], list(start["rows"])
        log.info("attempt %d: resumed after step %d", attempt, done)
    batches = seeded_batches(tokens, cfg.batch_size, seed=cfg.seed * 1000 + attempt, start=done)
    progress = Progress(cfg.max_steps, f"attempt {attempt}", log, "step", cfg.log_every, start=done)
    with progress, flush_denormals():
        for step in range(done + 1, cfg.max_steps + 1):
            started = time.perf_counter()
            xent, penalty = _step(model, cs, target, optimizer, next(batches), cfg, device)
            # As the authors: decisions are counted at the β of this step, then β grows (§4).
            on, undecided = cs.decision_counts()
            beta = float(cs.beta)
            cs.anneal(beta_growth(cfg, undecided / cs.numel))
            ms = 1000 * (time.perf_counter() - started)
            row = _history_row(attempt, step, xent, penalty, cfg, on, undecided, cs.numel, beta, ms)
            rows.append(row)
            if on_step is not None:
                on_step(dict(zip(HISTORY_COLUMNS, row, strict=True)))
            fractions = {"on": on / cs.numel, "undecided": undecided / cs.numel}
            progress.advance(xent=xent, penalty=penalty, **fractions, beta=beta)
            if _stopped(xent, on, undecided, step, attempt, cfg):
                break
            if snapshot is not None and step < cfg.max_steps:
                state = {"scores": cs.state_dict(), "optimizer": optimizer.state_dict()}
                snapshot({"step": step, **state, "rows": rows})
    return cs.hard(), rows


def fit_mask(
    model: nn.Module,
    target: Target,
    tokens: np.ndarray,
    cfg: MaskTrainingConfig,
    label: str,
    device: torch.device | str | None = None,
    resume: Resume | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """A trained mask, or for the sentinel labels ('full', 'empty') the fixed one, untrained."""
    if label in SENTINELS:
        empty = pd.DataFrame(columns=list(HISTORY_COLUMNS))
        return TrainResult(sentinel_mask(model, label), empty, 0, 0, True, f"sentinel {label}",
                           "sentinel")  # fmt: skip
    return train_mask(model, target, tokens, cfg, device, resume, on_step)


def resume_for(directory, every: int, cfg: MaskTrainingConfig) -> Resume:
    """Snapshots of a mask training with these settings."""
    return Resume(directory, every, {"mask_training": asdict(cfg)})


@dataclass(frozen=True)
class Attempt:
    """One finished attempt of `train_mask`: its hard mask, history rows, and the stability
    check's verdict."""

    number: int
    mask: Mask
    rows: list[tuple]
    stable: bool
    reason: str

    @property
    def final_loss(self) -> float:
        return self.rows[-1][HISTORY_COLUMNS.index("loss")]

    def state(self) -> dict[str, Any]:
        """What a resume snapshot keeps of it (tensors, lists and strings only)."""
        return {"attempt": self.number, "mask": dict(self.mask.tensors), "rows": self.rows,
                "stable": self.stable, "reason": self.reason}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Attempt:
        return cls(state["attempt"], Mask(state["mask"]), state["rows"], state["stable"],
                   state["reason"])  # fmt: skip


def _restored(saved: dict[str, Any] | None) -> list[Attempt]:
    """The attempts a resume snapshot had finished (and its RNG states, set); none without one."""
    if saved is None:
        return []
    set_rng_states(saved["rng"])
    return [Attempt.from_state(state) for state in saved["tried"]]


def _checked(attempt: int, mask: Mask, rows: list[tuple], cfg: MaskTrainingConfig) -> Attempt:
    """A finished attempt with the stability check's verdict on its loss curve."""
    xents = np.array([row[HISTORY_COLUMNS.index("xent")] for row in rows])
    stable, reason = is_stable(
        xents, cfg.spike_window, cfg.spike_absolute, cfg.spike_relative, cfg.spike_recovery_steps
    )
    ended = ending(rows, cfg)[0]
    log.info("attempt %d: %s, ended by %s after %d steps", attempt, reason, ended, len(rows))
    return Attempt(attempt, mask, rows, stable, reason)


def _warn_unless_converged(result: TrainResult, cfg: MaskTrainingConfig) -> None:
    """Say loudly when a mask is not a finished one: a user reads "stable" as "converged"."""
    if result.ended == "max_steps":
        log.warning(
            "the mask did not converge: max_steps %d ran out with %.3g%% of the weights "
            "undecided, %.3g× the weights on (the early-stop rule needs < %g×); its kept set is "
            "not final. Raise max_steps or beta_growth (docs/method.md §4)",
            cfg.max_steps, 100 * result.undecided_fraction, result.undecided_to_on,
            cfg.early_stop_fraction,
        )  # fmt: skip
    elif result.ended == "non_finite":
        log.warning("the kept attempt ended on a non-finite loss")


def _chosen(tried: Sequence[Attempt], attempts: int) -> Attempt:
    """The first stable attempt; if none is, the finite one with the lowest final loss (the
    authors keep all of them: docs/method.md §13)."""
    stable = [t for t in tried if t.stable]
    if stable:
        return stable[0]
    finite = [t for t in tried if math.isfinite(t.final_loss)]
    if not finite:
        raise FloatingPointError(f"all {attempts} attempts produced non-finite losses")
    return min(finite, key=lambda t: t.final_loss)


def train_mask(
    model: nn.Module,
    target: Target,
    tokens: np.ndarray,
    cfg: MaskTrainingConfig,
    device: torch.device | str | None = None,
    resume: Resume | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train a mask with up to ``cfg.attempts`` tries; keep the first stable one.

    If every attempt is unstable (the reference then keeps all of them), the one with the lowest
    final loss is returned and marked unstable. The model is moved to ``device`` (default: CUDA
    when available), frozen (``requires_grad=False``) and put in eval mode (no dropout), and stays
    so: only the scores are trained; a target whose tables live elsewhere follows it. With
    ``resume``, the state is saved every ``resume.every`` steps and a run continues from the last
    snapshot; the snapshots are removed once the mask is trained. ``on_step`` receives every
    step's history row as a dict.
    """
    device = default_device(device)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    target = target.to(device)
    saved = resume.load() if resume is not None else None
    tried = _restored(saved)

    def snapshot(attempt: int, state: dict[str, Any]) -> None:
        if resume is None or not resume.due(state["step"]):
            return
        finished = [t.state() for t in tried]
        resume.save({"attempt": attempt, "current": state, "tried": finished, "rng": rng_states()})

    for attempt in range(len(tried), cfg.attempts):
        start = saved["current"] if saved is not None and saved["attempt"] == attempt else None
        mask, rows = train_attempt(
            model, target, tokens, cfg, attempt, device, start,
            snapshot=lambda state, attempt=attempt: snapshot(attempt, state), on_step=on_step,
        )  # fmt: skip
        tried.append(_checked(attempt, mask, rows, cfg))
        if tried[-1].stable:
            break
    if resume is not None:
        resume.clear()
    chosen = _chosen(tried, cfg.attempts)
    history = pd.DataFrame([r for t in tried for r in t.rows], columns=list(HISTORY_COLUMNS))
    result = TrainResult(
        chosen.mask, history, chosen.number, len(chosen.rows), chosen.stable, chosen.reason,
        *ending(chosen.rows, cfg),
    )  # fmt: skip
    _warn_unless_converged(result, cfg)
    return result
