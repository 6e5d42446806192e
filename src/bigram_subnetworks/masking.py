"""Binary masks over named weights and the continuous-sparsification machinery (docs/method.md §3).

`Mask` is an immutable value keyed by the model's own parameter names. `ContinuousSparsification`
holds one trainable score per maskable weight; its soft mask is sigmoid(β·s) (Savarese et al.
2020), with β = 1/temperature growing every optimizer step. Masks are applied by parameter
substitution (`torch.func.functional_call`), so the base model is never modified or wrapped.
No Hugging Face imports here: this module works on any `nn.Module`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call

from .atomic import atomic_path

# Soft masks below this are exactly 0 in a training step. As β grows, σ(βs) of scores pushed to
# about −88/β falls below fp32's smallest normal number (1.2e-38), and W ⊙ σ(βs) does for masks
# up to ~1e-36: x86 matrix products with such subnormal operands run tens of times slower
# (SmolLM2-135M at λ = 1000: 4 s per step, 34 s by the last steps; benchmarks/README.md). A
# weight scaled by 1e-30 contributes nothing, and its score's gradient (∝ σ) is as negligible.
OFF_BELOW = 1e-30
# The header key of a mask file's tensor shapes: its tensors are packed bits (`Mask.save`).
PACKED_KEY = "packed"


@dataclass(frozen=True)
class Mask:
    """Binary keep-mask over named weight tensors (True = kept)."""

    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        for name, tensor in self.tensors.items():
            if tensor.dtype != torch.bool:
                raise TypeError(f"mask tensor {name!r} must be bool, got {tensor.dtype}")

    @classmethod
    def full(cls, shapes: Mapping[str, torch.Size]) -> Mask:
        return cls({name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()})

    @classmethod
    def empty(cls, shapes: Mapping[str, torch.Size]) -> Mask:
        return cls({name: torch.zeros(shape, dtype=torch.bool) for name, shape in shapes.items()})

    @property
    def shapes(self) -> dict[str, torch.Size]:
        return {name: tensor.shape for name, tensor in self.tensors.items()}

    @property
    def n_kept(self) -> int:
        return sum(int(t.sum()) for t in self.tensors.values())

    @property
    def n_total(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    @property
    def density(self) -> float:
        return self.n_kept / self.n_total

    def _same_layout(self, other: Mask) -> None:
        if self.shapes != other.shapes:
            raise ValueError("masks cover different weights or shapes")

    def __invert__(self) -> Mask:
        return Mask({name: ~t for name, t in self.tensors.items()})

    def __and__(self, other: Mask) -> Mask:
        self._same_layout(other)
        return Mask({name: t & other.tensors[name] for name, t in self.tensors.items()})

    def __or__(self, other: Mask) -> Mask:
        self._same_layout(other)
        return Mask({name: t | other.tensors[name] for name, t in self.tensors.items()})

    def equals(self, other: Mask) -> bool:
        return self.shapes == other.shapes and all(
            torch.equal(t, other.tensors[name]) for name, t in self.tensors.items()
        )

    def shuffled(self, generator: torch.Generator) -> Mask:
        """Same number kept in every tensor, at uniformly random positions (the random control)."""
        out = {}
        for name, tensor in self.tensors.items():
            order = torch.randperm(tensor.numel(), generator=generator)
            out[name] = tensor.flatten()[order].view(tensor.shape)
        return Mask(out)

    def per_tensor(self) -> dict[str, tuple[int, int]]:
        """name → (kept, total)."""
        return {name: (int(t.sum()), t.numel()) for name, t in self.tensors.items()}

    def check_matches(self, model: nn.Module, source: str = "mask") -> None:
        """Raise a clear error unless every mask tensor names a model weight of the same shape."""
        params = dict(model.named_parameters())
        for name, tensor in self.tensors.items():
            if name not in params:
                raise ValueError(f"{source}: weight {name!r} is not in the model")
            if params[name].shape != tensor.shape:
                raise ValueError(
                    f"{source}: {name!r} has shape {tuple(tensor.shape)}, "
                    f"the model's weight has {tuple(params[name].shape)}"
                )

    def save(self, path: str | os.PathLike, meta: Mapping | None = None) -> None:
        """Write safetensors atomically, one bit per weight: each tensor packed 8 weights to a
        byte (`numpy.packbits`, flattened row-major), its shape in the header (``packed``), so a
        mask takes an eighth of the disk of one bool per byte (the paper's 546 masks: 170 → 21
        GB; docs/scale.md). ``meta`` (JSON) is stored in the header too."""
        header = {PACKED_KEY: json.dumps({n: list(t.shape) for n, t in self.tensors.items()})}
        if meta:
            header["meta"] = json.dumps(meta, sort_keys=True, default=str)
        tensors = {
            name: torch.from_numpy(np.packbits(tensor.detach().cpu().numpy().reshape(-1)))
            for name, tensor in self.tensors.items()
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mask:
        """A mask written by `save` (packed bits) or by earlier versions (one bool per byte)."""
        try:
            with safe_open(str(path), framework="pt") as file:
                shapes = json.loads((file.metadata() or {}).get(PACKED_KEY, "null"))
            tensors = load_file(str(path))
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read mask file {path}: {err}") from err
        if shapes is None:
            return cls(dict(tensors))
        if set(shapes) != set(tensors):
            raise ValueError(f"cannot read mask file {path}: its header names other tensors")
        return cls({
            name: torch.from_numpy(
                np.unpackbits(tensors[name].numpy(), count=math.prod(shape)).view(np.bool_)
            ).reshape(shape)
            for name, shape in shapes.items()
        })  # fmt: skip


class ContinuousSparsification(nn.Module):
    """Trainable scores s per weight; soft mask sigmoid(β·s), hard mask s > 0 (docs/method.md §3).

    Scores start at 0 (soft mask 0.5). Weights that are exactly zero start at -1e6, i.e. off, as
    in the reference code. β is a buffer so it is saved with the scores.

    A training step uses `masked_weights` and `backward_scores` rather than autograd through
    `soft`: on a 135M-parameter model the elementwise work over the scores (one sigmoid, one
    product with the weights, and the chain rule back to s) costs as much as the matrix products
    unless it is done in a few passes over buffers that are reused from step to step (fresh
    400 MB tensors are page faults). `soft` and `penalty` remain the differentiable definitions;
    the step's soft mask also sets values below `OFF_BELOW` to 0.
    """

    def __init__(self, weights: Mapping[str, torch.Tensor], init: float = 0.0) -> None:
        super().__init__()
        self.names = tuple(weights)
        self.scores = nn.ParameterList(
            nn.Parameter(torch.where(w == 0, -1e6, init).to(torch.float32))
            for w in weights.values()
        )
        self.register_buffer("beta", torch.tensor(1.0))
        self.numel = sum(w.numel() for w in weights.values())
        # Work buffers of a step (not state): σ(βs) and W ⊙ σ(βs), one per score tensor.
        self._soft: list[torch.Tensor] = []
        self._masked: list[torch.Tensor] = []

    def soft(self) -> dict[str, torch.Tensor]:
        return {
            n: torch.sigmoid(self.beta * s) for n, s in zip(self.names, self.scores, strict=True)
        }

    def penalty(self, soft: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Σσ(βs)/|M|: the normalised L1 term, so λ means the same at every model size."""
        return sum(m.sum() for m in soft.values()) / self.numel

    @torch.no_grad()
    def masked_weights(self, weights: Mapping[str, torch.Tensor]) -> tuple[dict, float]:
        """(W ⊙ σ(βs) per name as leaf tensors that collect dL/d(W ⊙ m) in ``.grad``, the
        penalty Σσ(βs)/|M|), written into the reused buffers. Backpropagate any number of
        losses through a forward with these weights, then call `backward_scores`."""
        if not self._soft:
            self._soft = [torch.empty_like(s) for s in self.scores]
            self._masked = [torch.empty_like(s).requires_grad_() for s in self.scores]
        total = 0.0
        beta = float(self.beta)
        for s, m, masked, name in zip(
            self.scores, self._soft, self._masked, self.names, strict=True
        ):
            torch.mul(s, beta, out=m).sigmoid_()
            F.threshold_(m, OFF_BELOW, 0.0)
            total += float(m.sum())
            weight = weights[name]
            torch.mul(weight, m.to(weight.dtype), out=masked)
            masked.grad = None
        return dict(zip(self.names, self._masked, strict=True)), total / self.numel

    @torch.no_grad()
    def backward_scores(self, weights: Mapping[str, torch.Tensor], lam: float) -> None:
        """s.grad = β σ'(βs) (W ⊙ dL/d(W ⊙ m) + λ/|M|): the chain rule from the masked weights'
        gradients (left by backward after `masked_weights`) and the penalty, in two passes."""
        beta = float(self.beta)
        for s, m, masked, name in zip(
            self.scores, self._soft, self._masked, self.names, strict=True
        ):
            grad = masked.grad
            if grad is None:  # the weight took no part in the loss
                grad = torch.zeros_like(masked)
            # β·(g ⊙ W) + β·λ/|M|, then times σ(1 − σ): both in place, in g's memory.
            torch.addcmul(torch.tensor(beta * lam / self.numel), grad, weights[name],
                          value=beta, out=grad)  # fmt: skip
            s.grad = torch.ops.aten.sigmoid_backward.grad_input(grad, m, grad_input=grad)
            masked.grad = None

    @torch.no_grad()
    def hard(self) -> Mask:
        return Mask({n: (s > 0).cpu() for n, s in zip(self.names, self.scores, strict=True)})

    @torch.no_grad()
    def anneal(self, factor: float) -> None:
        self.beta.mul_(factor)

    @torch.no_grad()
    def decision_counts(self, low: float = 0.1, high: float = 0.9) -> tuple[int, int]:
        """(on, undecided): soft mask > high, and low ≤ soft ≤ high (early-stop rule, §4).

        σ is monotonic, so σ(βs) > high ⟺ s > logit(high)/β: the scores are compared with two
        thresholds instead of evaluating the sigmoid again.
        """
        beta = float(self.beta)
        above, below = math.log(high / (1 - high)) / beta, math.log(low / (1 - low)) / beta
        on = undecided = 0
        for s in self.scores:
            n_on = int(torch.count_nonzero(s > above))
            on += n_on
            undecided += int(torch.count_nonzero(s >= below)) - n_on
        return on, undecided


def masked_parameters(
    model: nn.Module, masks: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """W ⊙ m for every named weight of ``masks`` (bool or soft), on the weight's device."""
    params = dict(model.named_parameters())
    return {
        name: params[name] * m.to(params[name].device, params[name].dtype)
        for name, m in masks.items()
    }


def forward_with(model: nn.Module, parameters: Mapping[str, torch.Tensor], **inputs):
    """Run ``model`` with the given tensors in place of its parameters of the same names; the
    model itself is untouched."""
    return functional_call(
        model, dict(parameters), args=(), kwargs=inputs, strict=False, tie_weights=True
    )


def masked_forward(model: nn.Module, masks: Mapping[str, torch.Tensor], **inputs):
    """Run ``model`` with W ← W ⊙ m for the named weights; the model itself is untouched."""
    return forward_with(model, masked_parameters(model, masks), **inputs)


def _warn_if_partial(model: nn.Module, mask: Mask) -> None:
    from .architectures import family_of, maskable_parameters

    if family_of(getattr(getattr(model, "config", None), "model_type", None)) is None:
        return  # any nn.Module: which weights are "maskable" is the caller's to say
    missing = set(maskable_parameters(model)) - set(mask.tensors)
    if missing:
        warnings.warn(
            f"the mask covers {len(mask.tensors)} of the model's "
            f"{len(mask.tensors) + len(missing)} maskable weight matrices (missing e.g. "
            f"{sorted(missing)[0]}): only those it names are masked",
            stacklevel=3,
        )


@contextmanager
def apply_mask(model: nn.Module, mask: Mask) -> Iterator[nn.Module]:
    """Zero the masked-out weights in place for the body (generation, hooks); always restore.
    A mask that leaves out some of a supported model's maskable weights (e.g. two layers of
    three) applies to those it names only, with a warning: it is rarely what was meant."""
    mask.check_matches(model)
    _warn_if_partial(model, mask)
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name in mask.tensors}
    try:
        with torch.no_grad():
            for name, keep in mask.tensors.items():
                params[name].mul_(keep.to(params[name].device, params[name].dtype))
        yield model
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                params[name].copy_(original)
