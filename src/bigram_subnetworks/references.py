"""What a bigram r is read against (docs/method.md §6): the r that predictors which use no
model reach against the same bigram table on the same eval tokens.

- floor: the unigram distribution of the table's training text (add-one smoothed), which knows
  nothing of the current token;
- generalizing: a smoothed bigram model counted on one half of the training sequences, scored
  against the table of the other half, both ways and averaged: what a predictor that learns the
  bigram statistics of the text, not the table's own rows, reaches;
- copy: the same smoothing applied to the table's own counts: what a predictor that copies the
  table reaches (its r is below 1 only because smoothing moves mass to rare and unseen bigrams).

The smoothing is interpolated absolute discounting (Ney, Essen & Kneser 1994) with the add-one
unigram as its lower order, so the three predictors nest: the floor is the backoff of the other
two. Nothing here runs a model; the model's own references (the full model, the model fed the
current token alone) are `evaluation.context_free_correlations` and the `full` sentinel mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .bigrams import BigramCounts, BigramModel
from .evaluation import NOISE_BLOCKS, averaged_correlations, bigram_correlations

log = logging.getLogger(__name__)

PREDICTORS = ("floor", "generalizing", "copy")


def ney_discount(counts: BigramCounts) -> float:
    """D = n₁ / (n₁ + 2·n₂), n_k the number of distinct bigrams seen exactly k times: the
    estimate of the best absolute discount from the counts alone (nothing tuned on eval text);
    0 when no bigram is seen once (there is no evidence of unseen ones)."""
    n1 = int(np.count_nonzero(counts.pairs.data == 1))
    n2 = int(np.count_nonzero(counts.pairs.data == 2))
    return n1 / (n1 + 2 * n2) if n1 else 0.0


class SmoothedBigramModel:
    """Interpolated absolute discounting with an add-one unigram backoff:

    P(v | u) = max(c(u,v) − D, 0) / c(u) + D · N₁₊(u) / c(u) · P₁(v),  P₁(v) = (c(v) + 1) / (N + V)

    for a seen context u (N₁₊(u) distinct continuations of its c(u) tokens); P₁(v) for an unseen
    one. Each row sums to 1 (every count is ≥ 1 ≥ D); with D > 0 every probability is positive."""

    def __init__(self, counts: BigramCounts, discount: float | None = None) -> None:
        self.table = BigramModel(counts)
        self.vocab_size = counts.vocab_size
        self.discount = ney_discount(counts) if discount is None else discount
        self.totals = np.asarray(counts.pairs.sum(axis=1), dtype=np.float64).ravel()
        self.types = np.diff(counts.pairs.indptr).astype(np.float64)
        self.unigram = self.table.add_one_unigram()

    def pair_probabilities(self, contexts: np.ndarray, nexts: np.ndarray) -> np.ndarray:
        contexts = np.asarray(contexts, dtype=np.int64)
        nexts = np.asarray(nexts, dtype=np.int64)
        backoff = self.unigram[nexts]
        total = self.totals[contexts]
        seen = total > 0
        total = np.where(seen, total, 1.0)
        # c(u,v)/c(u) for seen contexts: the table's MLE, less the discount.
        kept = np.maximum(self.table.pair_probabilities(contexts, nexts) - self.discount / total, 0)
        weight = self.discount * self.types[contexts] / total
        return np.where(seen, kept + weight * backoff, backoff)

    def surprisal(self, sequences: np.ndarray) -> np.ndarray:
        """Surprisal in bits of tokens 1..T-1 of each sequence, shape [n, T-1]."""
        seqs = np.asarray(sequences, dtype=np.int64)
        with np.errstate(divide="ignore"):  # only with D = 0 (no bigram seen once)
            return -np.log2(self.pair_probabilities(seqs[:, :-1], seqs[:, 1:]))


def unigram_surprisal(counts: BigramCounts, sequences: np.ndarray) -> np.ndarray:
    """Surprisal in bits of tokens 1..T-1 under the add-one unigram of ``counts``, [n, T-1]."""
    seqs = np.asarray(sequences, dtype=np.int64)
    return -np.log2(BigramModel(counts).add_one_unigram()[seqs[:, 1:]])


@dataclass(frozen=True)
class References:
    """The references of one bigram table on one eval set: per predictor (`PREDICTORS`, and
    each direction of the generalizing one: `generalizing_a_to_b`, `generalizing_b_to_a`) the
    statistics of `evaluation.bigram_correlations`; the discounts used and the halves' sizes."""

    correlations: dict[str, dict[str, float]]
    discounts: dict[str, float]
    halves: tuple[int, int]


def bigram_references(
    train: np.ndarray,
    counts: BigramCounts,
    eval_tokens: np.ndarray,
    n_blocks: int = NOISE_BLOCKS,
    threads: int = 1,
) -> References:
    """Floor, generalizing and copy references of the table ``counts`` (counted on ``train``,
    [sequences, seq_len]) on ``eval_tokens``.

    The halves are the first and the second half of the training sequences: each is a run of
    whole documents but one (the split is by document, §1), so little text is shared; an
    interleaved split would put neighbouring chunks of the same document on both sides.
    """
    vocab_size = counts.vocab_size
    half = len(train) // 2
    if half < 1:
        raise ValueError(f"{len(train)} training sequences cannot be split into two halves")
    a = BigramCounts.count(train[:half], vocab_size, threads=threads)
    b = BigramCounts.count(train[half:], vocab_size, threads=threads)
    if a.unigrams.sum() + b.unigrams.sum() != counts.unigrams.sum():
        raise ValueError(
            f"the bigram table counts {counts.unigrams.sum()} tokens, its training sequences "
            f"{a.unigrams.sum() + b.unigrams.sum()}: the table was not counted on them"
        )
    table_bits = BigramModel(counts).surprisal(eval_tokens)
    copy = SmoothedBigramModel(counts)
    from_a, from_b = SmoothedBigramModel(a), SmoothedBigramModel(b)
    a_to_b = (from_a.surprisal(eval_tokens), BigramModel(b).surprisal(eval_tokens))
    b_to_a = (from_b.surprisal(eval_tokens), BigramModel(a).surprisal(eval_tokens))
    correlations = {
        "floor": bigram_correlations(unigram_surprisal(counts, eval_tokens), table_bits, n_blocks),
        "generalizing": averaged_correlations([a_to_b, b_to_a], n_blocks),
        "copy": bigram_correlations(copy.surprisal(eval_tokens), table_bits, n_blocks),
        "generalizing_a_to_b": bigram_correlations(*a_to_b, n_blocks),
        "generalizing_b_to_a": bigram_correlations(*b_to_a, n_blocks),
    }
    discounts = {"table": copy.discount, "half_a": from_a.discount, "half_b": from_b.discount}
    for name in PREDICTORS:
        found = correlations[name]
        log.info(
            "%s: r_drop_inf %.3f ± %.3f, r_clip_inf %.3f ± %.3f (%d eval sequences)", name,
            found["r_drop_inf"], found["r_drop_inf_se"], found["r_clip_inf"],
            found["r_clip_inf_se"], len(eval_tokens),
        )  # fmt: skip
    return References(correlations, discounts, (half, len(train) - half))
