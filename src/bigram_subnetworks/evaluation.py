"""How bigram-like and how large a subnetwork is (docs/method.md §6).

Surprisals are in bits and cover tokens 1..T-1 of each eval sequence (the first token has no
context). Pearson r against the bigram surprisal comes in the reference's two variants: ±inf
clipped to the largest finite value ("clip-inf"), and tokens with infinite bigram surprisal dropped
("drop-inf"). Both use the same model distribution: logits truncated to the tokenizer's vocabulary
(the reference mixed 50,277 and 50,304 columns between them). Spearman's rank correlation (rho)
comes beside each, and every statistic with its block-jackknife standard error over the eval
sequences. What an r should be compared with (floor, ceilings, the context-free model) is
`references` and docs/method.md §6.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
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
    """±inf → the largest finite value (the "clip-inf" variant, §6). NaN stays NaN: it is a
    numerically broken model, not an infinitely surprised one, and must not become a number."""
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 0.0
    return np.where(np.isinf(values), top, values)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN if either side has a NaN, fewer than two values, or no variance."""
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any() or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (as `scipy.stats.rankdata`)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson r of the ranks; NaN as `pearson`."""
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    return pearson(_ranks(a), _ranks(b))


# Contiguous blocks of eval sequences the standard errors are computed over: neighbouring
# sequences share documents, so tokens are not independent, blocks nearly are.
NOISE_BLOCKS = 10
STATISTICS = ("r_clip_inf", "r_drop_inf", "rho_clip_inf", "rho_drop_inf")


def sequence_blocks(shape: tuple[int, ...], n_blocks: int = NOISE_BLOCKS) -> np.ndarray:
    """Block id of every token of a [sequences, positions] array (flattened): the sequences cut
    into ``n_blocks`` contiguous runs of equal size (±1); a 1-D array's tokens are its rows."""
    n_rows = shape[0]
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    sizes = [len(part) for part in np.array_split(np.arange(n_rows), min(n_blocks, n_rows))]
    return np.repeat(np.repeat(np.arange(len(sizes)), sizes), per_row)


def jackknife_se(leave_one_out: Sequence[float]) -> float:
    """Delete-one-block jackknife standard error from a statistic's K values with one block
    left out each: √((K−1)/K · Σ_b (θ₋b − θ̄)²). It estimates the SE of the statistic on all
    blocks (for a mean, exactly the SE of the block means). NaN with fewer than two blocks or a
    NaN value."""
    values = np.asarray(leave_one_out, dtype=float)
    k = len(values)
    if k < 2:
        return float("nan")
    return float(np.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2)))


def _variants(model_bits: np.ndarray, bigram_bits: np.ndarray, blocks: np.ndarray) -> dict:
    """(model, bigram, block) arrays of each variant: clip-inf, and drop-inf (the tokens with a
    finite bigram surprisal); ±inf model surprisal clipped in both."""
    model_bits, bigram_bits = model_bits.ravel(), bigram_bits.ravel()
    finite = np.isfinite(bigram_bits)
    model_clipped = _clip_inf(model_bits)
    return {
        "clip_inf": (model_clipped, _clip_inf(bigram_bits), blocks),
        "drop_inf": (model_clipped[finite], bigram_bits[finite], blocks[finite]),
    }


def averaged_correlations(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_blocks: int = NOISE_BLOCKS
) -> dict[str, float]:
    """Every statistic of `bigram_correlations`, averaged over (model, bigram) surprisal pairs
    of the same tokens, each with the jackknife SE of that average (`<statistic>_se`; blocks of
    eval sequences, `sequence_blocks`). The two directions of the generalizing reference are
    such a pair (`references.bigram_references`)."""
    arrays = [(np.asarray(m, float), np.asarray(b, float)) for m, b in pairs]
    prepared = [_variants(m, b, sequence_blocks(b.shape, n_blocks)) for m, b in arrays]

    def values(drop_block: int | None) -> dict[str, float]:
        found: dict[str, list[float]] = {name: [] for name in STATISTICS}
        for variants in prepared:
            for variant, (model_bits, bigram_bits, blocks) in variants.items():
                if drop_block is not None:
                    keep = blocks != drop_block
                    model_bits, bigram_bits = model_bits[keep], bigram_bits[keep]
                found[f"r_{variant}"].append(pearson(model_bits, bigram_bits))
                found[f"rho_{variant}"].append(spearman(model_bits, bigram_bits))
        return {name: float(np.mean(found[name])) for name in STATISTICS}

    result = values(None)
    # One pass per left-out block serves every statistic's jackknife.
    left_out = [values(block) for block in np.unique(prepared[0]["clip_inf"][2])]
    for name in STATISTICS:
        result[f"{name}_se"] = jackknife_se([row[name] for row in left_out])
    return result


def bigram_correlations(
    model_bits: np.ndarray, bigram_bits: np.ndarray, n_blocks: int = NOISE_BLOCKS
) -> dict[str, float]:
    """Pearson r and Spearman rho of subnetwork vs bigram surprisal, clip-inf and drop-inf
    variants (§6), each with its standard error over ``n_blocks`` blocks of eval sequences
    (rows of a [sequences, positions] array; tokens of a 1-D one), and the share of tokens
    with an infinite bigram surprisal.

    A NaN model surprisal makes every statistic NaN, with a warning: a plausible r computed
    around it (or, for drop-inf, with it silently dropped) would hide a broken subnetwork.
    """
    model_bits, bigram_bits = np.asarray(model_bits, float), np.asarray(bigram_bits, float)
    fraction_inf = float(1.0 - np.isfinite(bigram_bits).mean())
    n_nan = int(np.isnan(model_bits).sum())
    if n_nan:
        log.warning(
            "%d of %d tokens have a NaN model surprisal: every r and rho is NaN",
            n_nan,
            model_bits.size,
        )
        nan = float("nan")
        return {
            **{name: nan for name in STATISTICS},
            **{f"{name}_se": nan for name in STATISTICS},
            "fraction_inf_bigram": fraction_inf,
        }
    correlations = averaged_correlations([(model_bits, bigram_bits)], n_blocks)
    return {**correlations, "fraction_inf_bigram": fraction_inf}


@torch.no_grad()
def context_free_surprisal(
    model: nn.Module,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    bos: int | None = None,
) -> np.ndarray:
    """Surprisal (bits, [n, T-1]) of every next token under the model fed the current token
    alone: −log₂ q(w_{t+1} | w_t) from a 1-token sequence (``[bos, w_t]`` with a BOS token), the
    model's own bigram distribution (docs/method.md §6).

    Each distinct current token runs once, ``batch_size`` of them per forward pass; only the
    probabilities of the next tokens that follow it in ``tokens`` are kept, so memory stays
    O(batch_size × V) on a 49k vocabulary.
    """
    device = next(model.parameters()).device
    seqs = np.asarray(tokens, dtype=np.int64)
    contexts, nexts = seqs[:, :-1].ravel(), seqs[:, 1:].ravel()
    distinct, which = np.unique(contexts, return_inverse=True)
    order = np.argsort(which, kind="stable")  # positions grouped by their context
    bounds = np.append(np.arange(0, len(distinct), batch_size), len(distinct))
    starts = np.searchsorted(which[order], bounds)  # each batch's first position in `order`
    bits = np.empty(contexts.shape, dtype=np.float64)
    was_training = model.training
    model.eval()
    progress = Progress(math.ceil(len(distinct) / batch_size), "context-free evaluation", log)
    try:
        for i, start in enumerate(range(0, len(distinct), batch_size)):
            ids = torch.from_numpy(distinct[start : start + batch_size, None]).to(device)
            if bos is not None:
                ids = torch.cat([torch.full_like(ids, bos), ids], dim=1)
            logits = truncate_logits(model(input_ids=ids).logits[:, -1], vocab_size)
            log_q = F.log_softmax(logits.float(), dim=-1)
            positions = order[starts[i] : starts[i + 1]]
            rows = torch.from_numpy(which[positions] - start).to(device)
            cols = torch.from_numpy(nexts[positions]).to(device)
            bits[positions] = (-log_q[rows, cols] / LN2).cpu().numpy()
            progress.advance()
    finally:
        progress.close()
        model.train(was_training)
    return bits.reshape(seqs.shape[0], seqs.shape[1] - 1)


def context_free_correlations(
    model: nn.Module,
    tokens: np.ndarray,
    bigrams: BigramModel,
    batch_size: int,
    bos: int | None = None,
) -> dict[str, float]:
    """`bigram_correlations` of the model fed the current token alone (`context_free_surprisal`,
    ``batch_size`` 1-token sequences per pass), with its mean surprisal (bits)."""
    bits = context_free_surprisal(model, tokens, bigrams.vocab_size, batch_size, bos)
    return {
        **bigram_correlations(bits, bigrams.surprisal(tokens)),
        "mean_surprisal_bits": float(bits.mean()),
    }


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
