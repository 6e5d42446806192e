"""How bigram-like and how large a subnetwork is (docs/method.md §6).

Surprisals are in bits and cover tokens 1..T-1 of each eval sequence (the first token has no
context). Pearson r against the bigram surprisal comes in the reference's two variants: ±inf
clipped to the largest finite value ("clip-inf"), and tokens with infinite bigram surprisal dropped
("drop-inf"). Both use the same model distribution: logits truncated to the tokenizer's vocabulary
(the reference mixed 50,277 and 50,304 columns between them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .architectures import iter_blocks
from .bigrams import BigramModel
from .masking import Mask, forward_with, masked_parameters
from .progress import Progress
from .targets import BigramTarget, Target, truncate_logits

log = logging.getLogger(__name__)

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalOutputs:
    """Per-token surprisal (bits, [n, T-1]), mean eval loss (nats), and the mean CE (nats)
    against each requested target. With ``compare_full``, also the unmasked model's surprisal and
    the CE of the subnetwork's distribution against the unmasked model's (``xent_full``)."""

    surprisal: np.ndarray
    eval_loss: float
    xents: dict[str, float]
    full_surprisal: np.ndarray | None = None
    xent_full: float | None = None


def _next_token_bits(log_q: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """−log2 q(w_{t+1}) at positions 0..T-2, from log-probabilities of every position."""
    nats = -log_q[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (nats / LN2).cpu().numpy()


class _Totals:
    """What `run_model` gathers batch by batch: surprisals, summed cross-entropies per target
    (weighted by sequences), and with the full model's distribution its surprisal and the CE of
    the subnetwork's distribution against it."""

    def __init__(self, targets: Mapping[str, Target]) -> None:
        self.targets = targets
        self.surprisals: list[np.ndarray] = []
        self.full_surprisals: list[np.ndarray] = []
        self.sums = dict.fromkeys(targets, 0.0)
        self.full_sum = 0.0

    def add(self, log_q: torch.Tensor, ids: torch.Tensor, log_p: torch.Tensor | None) -> None:
        self.surprisals.append(_next_token_bits(log_q, ids))
        for name, target in self.targets.items():
            self.sums[name] += float(target.cross_entropy_log_probs(log_q, ids)) * ids.shape[0]
        if log_p is not None:
            self.full_surprisals.append(_next_token_bits(log_p, ids))
            self.full_sum += float(-(log_p.exp() * log_q).sum(-1).mean()) * ids.shape[0]

    def outputs(self, n_sequences: int) -> EvalOutputs:
        surprisal = np.concatenate(self.surprisals)
        full = bool(self.full_surprisals)
        return EvalOutputs(
            surprisal,
            float(surprisal.mean() * LN2),
            {name: total / n_sequences for name, total in self.sums.items()},
            full_surprisal=np.concatenate(self.full_surprisals) if full else None,
            xent_full=self.full_sum / n_sequences if full else None,
        )


@torch.no_grad()
def run_model(
    model: nn.Module,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    targets: Mapping[str, Target] | None = None,
    mask: Mask | None = None,
    compare_full: bool = False,
    what: str = "evaluation",
) -> EvalOutputs:
    """Surprisal of every next token, and the CE against each of ``targets``.

    With ``mask``, the subnetwork runs by parameter substitution: W ⊙ m is formed once, and the
    model itself is never modified. One log-softmax per batch serves the surprisal and every
    target. ``compare_full`` also runs the unmasked model on each batch (the fidelity of
    docs/method.md §6).
    """
    device = next(model.parameters()).device
    parameters = None
    if mask is not None:
        mask.check_matches(model)
        parameters = masked_parameters(model, mask.tensors)

    def log_probs(ids: torch.Tensor, params: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        output = (
            model(input_ids=ids) if params is None else forward_with(model, params, input_ids=ids)
        )
        return F.log_softmax(truncate_logits(output.logits, vocab_size).float(), dim=-1)

    was_training = model.training
    model.eval()
    totals = _Totals(dict(targets or {}))
    progress = Progress(math.ceil(len(tokens) / batch_size), what, log)
    try:
        for start in range(0, len(tokens), batch_size):
            ids = torch.from_numpy(np.asarray(tokens[start : start + batch_size], np.int64))
            ids = ids.to(device)
            log_q = log_probs(ids, parameters)
            log_p = None
            if compare_full:
                log_p = log_q if parameters is None else log_probs(ids, None)
            totals.add(log_q, ids, log_p)
            progress.advance()
    finally:
        progress.close()
        model.train(was_training)
    return totals.outputs(len(tokens))


def _clip_inf(values: np.ndarray) -> np.ndarray:
    """±inf → the largest finite value (the "clip-inf" variant, §5). NaN stays NaN: it is a
    numerically broken model, not an infinitely surprised one, and must not become a number."""
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 0.0
    return np.where(np.isinf(values), top, values)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN if either side has a NaN, fewer than two values, or no variance."""
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any() or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def bigram_correlations(model_bits: np.ndarray, bigram_bits: np.ndarray) -> dict[str, float]:
    """Pearson r of subnetwork vs bigram surprisal, clip-inf and drop-inf variants (§5).

    A NaN model surprisal makes both r NaN, with a warning: a plausible r computed around it (or,
    for drop-inf, with it silently dropped) would hide a broken subnetwork.
    """
    model_bits, bigram_bits = model_bits.ravel(), bigram_bits.ravel()
    finite = np.isfinite(bigram_bits)
    r = {"r_clip_inf": float("nan"), "r_drop_inf": float("nan")}
    n_nan = int(np.isnan(model_bits).sum())
    if n_nan:
        log.warning(
            "%d of %d tokens have a NaN model surprisal: r_clip_inf and r_drop_inf are NaN",
            n_nan,
            model_bits.size,
        )
    else:
        model_clipped = _clip_inf(model_bits)
        r["r_clip_inf"] = pearson(model_clipped, _clip_inf(bigram_bits))
        r["r_drop_inf"] = pearson(model_clipped[finite], bigram_bits[finite])
    return {**r, "fraction_inf_bigram": float(1.0 - finite.mean())}


def evaluate_mask(
    model: nn.Module,
    mask: Mask,
    tokens: np.ndarray,
    bigrams: BigramModel,
    batch_size: int,
    fidelity: bool = False,
) -> dict[str, float]:
    """All scalar metrics of one subnetwork on the eval split.

    With ``fidelity`` (optimal subnetworks, docs/method.md §6), also how closely it reproduces the
    full model: Pearson r of its surprisal against the full model's (±inf clipped), and the CE
    of its distribution against the full model's (nats; equals the full model's entropy for an
    all-kept mask).
    """
    device = next(model.parameters()).device
    targets = {"bigram": BigramTarget(bigrams, device=device)}
    outputs = run_model(
        model, tokens, bigrams.vocab_size, batch_size, targets, mask, compare_full=fidelity
    )
    metrics = {
        "n_kept": mask.n_kept,
        "n_total": mask.n_total,
        "kept_fraction": mask.density,
        **bigram_correlations(outputs.surprisal, bigrams.surprisal(tokens)),
        "xent_bigram": outputs.xents["bigram"],
        "eval_loss": outputs.eval_loss,
        "mean_surprisal_bits": float(outputs.surprisal.mean()),
    }
    if fidelity:
        metrics["r_full"] = pearson(
            _clip_inf(outputs.surprisal.ravel()), _clip_inf(outputs.full_surprisal.ravel())
        )
        metrics["xent_full"] = outputs.xent_full
    return metrics


def kept_by_block(model: nn.Module, mask: Mask, per_head: bool = False) -> pd.DataFrame:
    """Kept and total weights per layer and block (attn_q/k/v/o per head, mlp_in/out)."""
    rows = []
    for name, piece in iter_blocks(model):
        block = mask.tensors[name][piece.rows, piece.cols]
        rows.append((piece.layer, piece.block, piece.head, int(block.sum()), block.numel()))
    table = pd.DataFrame(rows, columns=["layer", "block", "head", "n_kept", "n_total"])
    keys = ["layer", "block", "head"] if per_head else ["layer", "block"]
    table = table.groupby(keys, sort=True, dropna=False)[["n_kept", "n_total"]].sum().reset_index()
    table["kept_fraction"] = table["n_kept"] / table["n_total"]
    return table
