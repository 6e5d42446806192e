"""What a mask is trained to reproduce (docs/method.md §5).

A target turns the masked model's logits and the input ids into the cross-entropy
-Σ_v P(v | position) · log q(v), averaged over all positions (including the last), in nats.
`BigramTarget` keeps the bigram table as sparse rows on the training device and gathers only the
nonzero entries, never a dense [batch, seq, V] target (the reference code's bottleneck).
`TeacherTarget` uses the full model's own (detached) distribution: the pruning baseline.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bigrams import BigramModel
from .runtime import autocast, model_logits


def truncate_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop padded logit columns (Pythia has 50,304 logits for 50,277 tokens)."""
    if logits.shape[-1] < vocab_size:
        raise ValueError(f"model has {logits.shape[-1]} logits for a {vocab_size}-token vocabulary")
    return logits[..., :vocab_size]


class Target(Protocol):
    vocab_size: int

    def to(self, device: torch.device | str) -> Target:
        """The target with its tables on ``device`` (the training device)."""
        ...

    def cross_entropy(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor: ...

    def cross_entropy_log_probs(
        self, log_q: torch.Tensor, input_ids: torch.Tensor
    ) -> torch.Tensor: ...


class BigramTarget:
    """P_bigram(· | w_t) at every position t, from sparse CSR rows on ``device``."""

    def __init__(self, bigrams: BigramModel, device: torch.device | str = "cpu") -> None:
        probs = bigrams.probs
        self.bigrams = bigrams
        self.vocab_size = bigrams.vocab_size
        self.row_ptr = torch.as_tensor(probs.indptr.astype(np.int64), device=device)
        self.columns = torch.as_tensor(probs.indices.astype(np.int64), device=device)
        self.values = torch.as_tensor(probs.data, dtype=torch.float32, device=device)
        self.seen = torch.as_tensor(bigrams.seen, device=device)
        self.backoff = torch.as_tensor(bigrams.backoff_row(), dtype=torch.float32, device=device)
        # Reused work buffers (name → flat tensor): fresh [contexts, V] or [positions, V]
        # allocations every step cost as much as the math (page faults). Reusing one while
        # autograd still holds it for backward raises, via the tensors' version counters.
        self._buffers: dict[str, torch.Tensor] = {}

    def to(self, device: torch.device | str) -> BigramTarget:
        """The sparse rows on ``device`` (a model moved to CUDA after the target was made, as a
        model loaded on the CPU is, needs its target there too); work buffers start afresh."""
        device = torch.device(device)
        if self.values.device == device:
            return self
        for name in ("row_ptr", "columns", "values", "seen", "backoff"):
            setattr(self, name, getattr(self, name).to(device))
        self._buffers = {}
        return self

    def _buffer(self, name: str, rows: int) -> torch.Tensor:
        """A [rows, V] float32 view of the reused buffer ``name``, grown when too small."""
        size = rows * self.vocab_size
        flat = self._buffers.get(name)
        if flat is None or flat.numel() < size:
            flat = self._buffers[name] = torch.empty(size, device=self.values.device)
        return flat[:size].view(rows, self.vocab_size)

    def cross_entropy(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Position t is trained towards P(· | w_t), the last position included (§3)."""
        return self.cross_entropy_given(logits, input_ids)

    def cross_entropy_given(self, logits: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """CE against the rows of explicit contexts; V is the sequence-start context."""
        z = truncate_logits(logits, self.vocab_size).float().reshape(-1, self.vocab_size)
        unique, inverse = torch.unique(contexts.reshape(-1), return_inverse=True)
        rows = self.dense_rows(unique, out=self._buffer("rows", len(unique)))
        summed = self._buffer("summed", len(unique))
        log_q, gathered = self._buffer("log_q", len(z)), self._buffer("gathered", len(z))
        return _SoftTargetCrossEntropy.apply(z, inverse, rows, summed, log_q, gathered)

    def cross_entropy_log_probs(self, log_q: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The same CE from log-probabilities the caller already has (evaluation computes them
        once for the surprisal too); no gradient."""
        log_q = log_q.reshape(-1, self.vocab_size)
        unique, inverse = torch.unique(input_ids.reshape(-1), return_inverse=True)
        rows = self.dense_rows(unique, out=self._buffer("rows", len(unique)))
        return _dot_with_rows(log_q, inverse, rows, self._buffer("summed", len(unique)))

    def dense_rows(self, contexts: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The full [n, V] target of each context: its CSR row, or the backoff row if unseen;
        written into ``out`` when given."""
        contexts = contexts.reshape(-1)
        seen = self.seen[contexts]
        shape = (contexts.numel(), self.vocab_size)
        out = torch.zeros(shape, device=self.values.device) if out is None else out.zero_()
        out[~seen] = self.backoff
        rows = torch.nonzero(seen).squeeze(1)
        starts = self.row_ptr[contexts[rows]]
        lengths = self.row_ptr[contexts[rows] + 1] - starts
        row_of_entry = torch.repeat_interleave(rows, lengths)
        offsets = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        entries = torch.repeat_interleave(starts, lengths) + (
            torch.arange(row_of_entry.numel(), device=out.device) - offsets
        )
        out[row_of_entry, self.columns[entries]] = self.values[entries]
        return out


def _dot_with_rows(
    log_q: torch.Tensor, inverse: torch.Tensor, rows: torch.Tensor, summed: torch.Tensor
) -> torch.Tensor:
    """mean_n −Σ_v rows[inverse[n], v] · log_q[n, v], summing the positions that share a context
    first (into ``summed``, rows' shape, overwritten), so each target row is read once."""
    summed.zero_().index_add_(0, inverse, log_q)
    return -torch.vdot(rows.flatten(), summed.flatten()) / log_q.shape[0]


class _SoftTargetCrossEntropy(torch.autograd.Function):
    """mean_n −Σ_v T[u_n, v] log softmax(z_n)_v, with T[u] the target row of context u_n.

    The target is needed once per distinct context (frequent tokens repeat many times in a
    batch): the forward sums the log-probabilities of the positions sharing a context before the
    dot product, and the backward is softmax(z) − T[u_n], as for a one-hot cross-entropy. The
    log-probabilities, written into a reused buffer, become the gradient in place, and the target
    rows are gathered into another: large fresh allocations (page faults) cost as much as the
    math.
    """

    @staticmethod
    def forward(ctx, z, inverse, rows, summed, log_q, gathered):
        torch.log_softmax(z, dim=-1, out=log_q)
        ctx.save_for_backward(log_q, inverse, rows, gathered)
        return _dot_with_rows(log_q, inverse, rows, summed)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        log_q, inverse, rows, gathered = ctx.saved_tensors
        dz = log_q.exp_()  # log_q is not needed again: reuse its memory for the gradient
        dz -= torch.index_select(rows, 0, inverse, out=gathered)
        dz *= grad / dz.shape[0]
        return dz, None, None, None, None, None


class TeacherTarget:
    """The full model's own next-token distribution, detached (optimal-pruning baseline, §5).

    The teacher is the unmodified ``model``: masks applied by `masked_forward` substitute
    parameters for one call only, so the same module serves as frozen teacher and masked student.
    """

    def __init__(self, model: nn.Module, vocab_size: int, precision: str = "auto") -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.precision = precision  # of the teacher's forward (`runtime.autocast`)

    def to(self, device: torch.device | str) -> TeacherTarget:
        """The teacher is the trained model itself, which `train_mask` moves."""
        return self

    def cross_entropy(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        log_q = F.log_softmax(truncate_logits(logits, self.vocab_size).float(), dim=-1)
        return self.cross_entropy_log_probs(log_q, input_ids)

    def cross_entropy_log_probs(self, log_q: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(input_ids.device, self.precision):
            teacher = model_logits(self.model, input_ids)
            p = F.softmax(truncate_logits(teacher, self.vocab_size).float(), dim=-1)
        return -(p * log_q).sum(-1).mean()


def make_target(
    kind: str, model: nn.Module, bigrams: BigramModel, precision: str = "auto"
) -> Target:
    """The training target by name: ``bigram`` or ``optimal`` (docs/method.md §5), whose
    teacher forward runs at the training step's ``precision``."""
    if kind == "bigram":
        return BigramTarget(bigrams, device=next(model.parameters()).device)
    if kind == "optimal":
        return TeacherTarget(model, bigrams.vocab_size, precision)
    raise ValueError(f"unknown target {kind!r}: expected 'bigram' or 'optimal'")
