"""The library's typed settings: frozen dataclasses that check their own meaning.

The workflow's config validation builds these to check the config (so each rule is written
once, here), the library's functions take them, and `find_bigram_subnetwork` uses the paper's
defaults of `MaskTrainingConfig`. Nothing here imports torch or transformers: validating a config
when the DAG is built stays fast.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .architectures import REGISTRY

# λ labels with no training: keep every maskable weight (λ = −∞) or none (λ = +∞).
SENTINELS = {"full": float("-inf"), "empty": float("inf")}
# How a mask-training step multiplies matrices (`runtime.autocast`).
PRECISIONS = ("auto", "bf16", "fp32")
_KINDS = {"int": "an integer", "float": "a number", "str": "a string"}


@dataclass(frozen=True)
class MaskTrainingConfig:
    """Hyperparameters of one mask-training run. The defaults are the paper's (the authors'
    `train_circuits.py`; docs/method.md §4), the one place they are written: the library's
    `find_bigram_subnetwork` uses them, and configs/paper.yaml is checked against them."""

    lam: float
    learning_rate: float = 5e-5
    weight_decay: float = 0.01  # PyTorch's AdamW default, which the authors keep
    beta_growth: float = 1.001  # β ← β · growth after every step
    max_steps: int = 15_000
    batch_size: int = 32  # sequences per optimizer step
    grad_accum: int = 1  # micro-batches per step (2 for Pythia-1B)
    early_stop_fraction: float = 0.01  # stop when undecided weights < this × kept ones
    attempts: int = 3
    spike_window: int = 10
    spike_absolute: float = 0.25
    spike_relative: float = 1.25
    spike_recovery_steps: int = 100
    log_every: int = 100
    seed: int = 0
    # Matrix products of a step (PRECISIONS): "auto" is bf16 autocast on CUDA (as the
    # authors train) and fp32 on the CPU; "bf16" autocasts on the CPU too, 1.4x faster per step
    # on SmolLM2-135M where the CPU has native bf16 (AVX512-BF16, AMX). Logits and loss stay fp32.
    precision: str = "auto"
    # Beyond the paper (docs/method.md §4): β grows by beta_growth_late instead once at most
    # late_undecided of the weights are undecided. The weights the target does not need are
    # decided together, in one event; a slow growth through it keeps the loss curve smooth, a
    # fast one after it decides the rest in a fraction of the steps (docs/schedule-trials.md).
    # None: beta_growth throughout, as the paper.
    beta_growth_late: float | None = None
    late_undecided: float = 0.2

    def __post_init__(self) -> None:
        self._check_types()
        # λ = ±inf are the sentinels (`SENTINELS`), which are never trained.
        if not (self.lam >= 0 or self.lam == -math.inf):
            raise ValueError(f"lam must be a number ≥ 0 (λ of the L1 penalty), got {self.lam}")
        if not 0 < self.learning_rate < math.inf:
            raise ValueError(f"learning_rate must be > 0 and finite, got {self.learning_rate}")
        if not 0 <= self.early_stop_fraction <= 1:  # 0: only once nothing is undecided
            raise ValueError(
                f"early_stop_fraction must be in [0, 1], got {self.early_stop_fraction}"
            )
        for field in ("weight_decay", "spike_absolute", "spike_recovery_steps", "seed"):
            if not 0 <= getattr(self, field) < math.inf:
                raise ValueError(f"{field} must be ≥ 0 and finite, got {getattr(self, field)}")
        if not 0 < self.spike_relative < math.inf:
            raise ValueError(f"spike_relative must be > 0, got {self.spike_relative}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        for field in ("max_steps", "batch_size", "grad_accum", "attempts", "log_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be ≥ 1, got {getattr(self, field)}")
        if self.beta_growth < 1:
            raise ValueError(f"beta_growth must be ≥ 1, got {self.beta_growth}")
        if self.beta_growth_late is not None and not 1 <= self.beta_growth_late < math.inf:
            raise ValueError(f"beta_growth_late must be ≥ 1, got {self.beta_growth_late}")
        if not 0 < self.late_undecided <= 1:
            raise ValueError(f"late_undecided must be in (0, 1], got {self.late_undecided}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def _check_types(self) -> None:
        """Each setting is of its field's type (an int for counts: 2.5 steps or "10" are
        refused here, by name, rather than deep inside numpy or torch)."""
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and "None" in field.type:
                continue
            if field.type == "int":
                ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            elif field.type.startswith("float"):
                ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise TypeError(
                    f"{field.name} must be {_KINDS[field.type.split()[0]]}, got "
                    f"{type(value).__name__} "
                    f"{value!r}"
                )

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum


@dataclass(frozen=True)
class ModelShape:
    """The size of a model pretrained in the pipeline; config.yaml sets every field but
    ``num_kv_heads`` (key/value heads of the Llama layout; None: as many as query heads)."""

    arch: str  # a family of `architectures.REGISTRY`
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    num_kv_heads: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in REGISTRY:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {sorted(REGISTRY)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads {self.num_heads} does not divide hidden_size {self.hidden_size}"
            )
        if self.num_kv_heads is not None:
            if not REGISTRY[self.arch].grouped_query:
                raise ValueError(
                    f"num_kv_heads: the {self.arch} layout has as many key/value heads as query "
                    "heads"
                )
            if self.num_heads % self.num_kv_heads:
                raise ValueError(
                    f"num_kv_heads {self.num_kv_heads} does not divide num_heads {self.num_heads}"
                )


@dataclass(frozen=True)
class PretrainConfig:
    """Hyperparameters of one pretraining run (no defaults: there is no paper value for them).

    ``checkpoint_steps`` are the steps saved (0 = the initialisation), log-spaced as in Pythia;
    the final step must be among them so every run ends with a saved model.
    """

    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    eval_every: int
    eval_sequences: int
    checkpoint_steps: tuple[int, ...]
    seed: int
    log_every: int

    def __post_init__(self) -> None:
        for field in ("steps", "batch_size", "eval_every", "eval_sequences", "log_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be ≥ 1, got {getattr(self, field)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for field in ("warmup_steps", "weight_decay", "seed"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be ≥ 0, got {getattr(self, field)}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}")
        object.__setattr__(self, "checkpoint_steps", tuple(self.checkpoint_steps))
        self._check_checkpoint_steps()

    def _check_checkpoint_steps(self) -> None:
        steps = list(self.checkpoint_steps)
        if steps != sorted(set(steps)):
            raise ValueError(f"checkpoint_steps must be sorted and unique, got {steps}")
        if steps[0] < 0 or steps[-1] > self.steps:
            raise ValueError(f"checkpoint_steps must lie in [0, steps={self.steps}], got {steps}")
        if steps[-1] != self.steps:
            raise ValueError(
                f"checkpoint_steps must include the final step {self.steps}, got {steps}"
            )


def configs_from_dict(arch: str, settings: Mapping[str, Any]) -> tuple[ModelShape, PretrainConfig]:
    """Split a model's `pretrain` config section into its shape and its training config."""
    settings = dict(settings)
    shape_fields = (
        "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
        "num_kv_heads",
    )  # fmt: skip
    shape = ModelShape(
        arch=arch, **{name: settings.pop(name) for name in shape_fields if name in settings}
    )
    checkpoints = tuple(settings.pop("checkpoints"))
    return shape, PretrainConfig(checkpoint_steps=checkpoints, **settings)
