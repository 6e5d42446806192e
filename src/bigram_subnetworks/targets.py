"""What a mask is trained to reproduce (paper-spec §3–4).

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


def truncate_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop padded logit columns (Pythia has 50,304 logits for 50,277 tokens)."""
    if logits.shape[-1] < vocab_size:
        raise ValueError(f"model has {logits.shape[-1]} logits for a {vocab_size}-token vocabulary")
    return logits[..., :vocab_size]


class Target(Protocol):
    vocab_size: int

    def cross_entropy(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor: ...


class BigramTarget:
    """P_bigram(· | w_t) at every position t, from sparse CSR rows on ``device``."""

    def __init__(self, bigrams: BigramModel, device: torch.device | str = "cpu") -> None:
        probs = bigrams.probs
        self.vocab_size = bigrams.vocab_size
        self.row_ptr = torch.as_tensor(probs.indptr.astype(np.int64), device=device)
        self.columns = torch.as_tensor(probs.indices.astype(np.int64), device=device)
        self.values = torch.as_tensor(probs.data, dtype=torch.float32, device=device)
        self.seen = torch.as_tensor(bigrams.seen, device=device)
        self.backoff = torch.as_tensor(bigrams.backoff_row(), dtype=torch.float32, device=device)

    def cross_entropy(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Position t is trained towards P(· | w_t), the last position included (§3)."""
        return self.cross_entropy_given(logits, input_ids)

    def cross_entropy_given(self, logits: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """CE against the rows of explicit contexts; V is the sequence-start context."""
        log_q = F.log_softmax(truncate_logits(logits, self.vocab_size).float(), dim=-1)
        log_q = log_q.reshape(-1, self.vocab_size)
        contexts = contexts.reshape(-1)
        seen = self.seen[contexts]
        # Seen contexts: gather the nonzero entries of each context's row.
        positions = torch.nonzero(seen).squeeze(1)
        starts = self.row_ptr[contexts[positions]]
        lengths = self.row_ptr[contexts[positions] + 1] - starts
        entry_pos = torch.repeat_interleave(positions, lengths)
        offsets = torch.cumsum(lengths, 0) - lengths
        within = torch.arange(entry_pos.numel(), device=logits.device)
        within = within - torch.repeat_interleave(offsets, lengths)
        entries = torch.repeat_interleave(starts, lengths) + within
        seen_loss = (self.values[entries] * log_q[entry_pos, self.columns[entries]]).sum()
        # Unseen contexts back off to one shared dense row.
        unseen_loss = (log_q[~seen] @ self.backoff).sum()
        return -(seen_loss + unseen_loss) / contexts.numel()

    def dense_rows(self, contexts: torch.Tensor) -> torch.Tensor:
        """The full [n, V] target for some contexts (tests and small analyses only)."""
        out = self.backoff.expand(contexts.numel(), -1).clone()
        for i, u in enumerate(contexts.reshape(-1).tolist()):
            if self.seen[u]:
                start, end = int(self.row_ptr[u]), int(self.row_ptr[u + 1])
                out[i] = 0.0
                out[i, self.columns[start:end]] = self.values[start:end]
        return out


class TeacherTarget:
    """The full model's own next-token distribution, detached (optimal-pruning baseline, §4)."""

    def __init__(self, model: nn.Module, vocab_size: int) -> None:
        self.model = model
        self.vocab_size = vocab_size

    def cross_entropy(self, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.model(input_ids=input_ids).logits
            p = F.softmax(truncate_logits(teacher, self.vocab_size).float(), dim=-1)
        log_q = F.log_softmax(truncate_logits(logits, self.vocab_size).float(), dim=-1)
        return -(p * log_q).sum(-1).mean()
