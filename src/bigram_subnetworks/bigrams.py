"""Bigram statistics: sparse counts, MLE probabilities with backoff, surprisal (docs/method.md §2).

Counts are a scipy CSR matrix of shape (V+1)×V: row u holds the continuations of token u, and
row V is the sequence-start context (the first token of every sequence follows it). P(v|u) is the
unsmoothed MLE c(u,v)/Σc(u,·); a context never seen backs off to the unigram distribution, and to
uniform 1/V if there is none. A seen context with an unseen continuation has probability 0
(infinite surprisal), exactly as the reference `NGramModel`. Counting sorts pair codes chunk by
chunk (on several threads), so memory is O(chunk + distinct bigrams), never O(V²).
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp

from .atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _pair_codes(sequences: np.ndarray, vocab_size: int) -> np.ndarray:
    """context·V + next for every token; the context of a sequence's first token is V (start).

    Codes are uint32 whenever (V+1)·V fits (V ≤ 65,535): sorting them is about twice as fast as
    sorting int64, and sorting is what counting costs.
    """
    dtype = np.uint32 if (vocab_size + 1) * vocab_size < 2**32 else np.uint64
    seqs = np.asarray(sequences).astype(dtype, copy=False)
    codes = np.empty(seqs.shape, dtype=dtype)
    codes[:, 0] = vocab_size
    codes[:, 1:] = seqs[:, :-1]
    codes *= dtype(vocab_size)
    codes += seqs
    return codes.ravel()


def _check_ids(sequences: np.ndarray, vocab_size: int) -> None:
    if sequences.ndim != 2:
        raise ValueError(f"token array must be 2-D [sequences, seq_len], got {sequences.shape}")
    if sequences.size and int(sequences.max()) >= vocab_size:
        raise ValueError(f"token id {int(sequences.max())} ≥ vocabulary size {vocab_size}")


def _count_chunk(sequences: np.ndarray, vocab_size: int) -> sp.csr_matrix:
    """Bigram counts of one chunk as a canonical (V+1)×V CSR: sort its pair codes, run-length
    encode them; sorted codes are already in CSR order (row-major), so no re-sort is needed."""
    codes = _pair_codes(np.asarray(sequences), vocab_size)
    codes.sort()
    n_contexts = vocab_size + 1
    if codes.size == 0:
        return sp.csr_matrix((n_contexts, vocab_size), dtype=np.int64)
    new_run = np.empty(codes.size, dtype=bool)
    new_run[0] = True
    np.not_equal(codes[1:], codes[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    counts = np.diff(starts, append=codes.size)
    rows, cols = np.divmod(codes[starts], codes.dtype.type(vocab_size))
    indptr = np.zeros(n_contexts + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_contexts), out=indptr[1:])
    pairs = sp.csr_matrix(
        (counts, cols.astype(np.int32), indptr), shape=(n_contexts, vocab_size), copy=False
    )
    pairs.has_canonical_format = True  # sorted, unique column indices in every row
    return pairs


@dataclass(frozen=True)
class BigramCounts:
    """Raw counts: ``pairs`` (V+1)×V CSR with the start context as row V; ``unigrams`` (V,)."""

    pairs: sp.csr_matrix
    unigrams: np.ndarray

    @property
    def vocab_size(self) -> int:
        return self.pairs.shape[1]

    @property
    def start_context(self) -> int:
        return self.vocab_size

    @classmethod
    def count(
        cls,
        sequences: np.ndarray,
        vocab_size: int,
        chunk_rows: int = 262_144,
        threads: int = 1,
    ) -> BigramCounts:
        """Count bigrams of fixed-length sequences, ``chunk_rows`` sequences at a time.

        Each chunk is counted on its own (`_count_chunk`: sort its pair codes, run-length encode
        them, CSR), on ``threads`` threads at once (NumPy's sort releases the GIL), and the chunks'
        matrices are summed by scipy's linear merge of sorted rows. The input is split into at
        least ``threads`` chunks so every thread has work. Unigrams are the column sums: every
        token is the continuation of exactly one pair (the first one of the start context).
        """
        _check_ids(sequences, vocab_size)
        if chunk_rows < 1 or threads < 1:
            raise ValueError(f"chunk_rows ({chunk_rows}) and threads ({threads}) must be ≥ 1")
        n = len(sequences)
        chunk = max(1, min(chunk_rows, math.ceil(n / threads)))
        pieces = [sequences[start : start + chunk] for start in range(0, n, chunk)]
        pairs = sp.csr_matrix((vocab_size + 1, vocab_size), dtype=np.int64)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for counted in pool.map(partial(_count_chunk, vocab_size=vocab_size), pieces):
                pairs = pairs + counted if pairs.nnz else counted
        unigrams = np.bincount(pairs.indices, weights=pairs.data, minlength=vocab_size)
        return cls(pairs=pairs, unigrams=unigrams.astype(np.int64))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                format_version=FORMAT_VERSION,
                data=self.pairs.data,
                indices=self.pairs.indices,
                indptr=self.pairs.indptr,
                shape=np.array(self.pairs.shape),
                unigrams=self.unigrams,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> BigramCounts:
        try:
            with np.load(path) as z:
                shape = tuple(int(x) for x in z["shape"])
                pairs = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
                unigrams = z["unigrams"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"cannot read bigram counts {path}: {err}") from err
        if shape[0] != shape[1] + 1 or unigrams.shape != (shape[1],):
            raise ValueError(f"bigram counts {path} have inconsistent shapes {shape}")
        return cls(pairs=pairs, unigrams=unigrams)


class BigramModel:
    """MLE bigram probabilities with unigram → uniform backoff for unseen contexts."""

    def __init__(self, counts: BigramCounts) -> None:
        self.counts = counts
        self.vocab_size = counts.vocab_size
        pairs = counts.pairs
        totals = np.asarray(pairs.sum(axis=1)).ravel()
        self.seen = totals > 0
        lengths = np.diff(pairs.indptr)
        with np.errstate(divide="ignore", invalid="ignore"):
            row_scale = np.where(totals > 0, 1.0 / totals, 0.0)
        # CSR of P(v|u) for seen contexts; pair codes in CSR order are sorted, for lookups.
        self.probs = sp.csr_matrix(
            (pairs.data * np.repeat(row_scale, lengths), pairs.indices, pairs.indptr),
            shape=pairs.shape,
        )
        self._codes = np.repeat(np.arange(pairs.shape[0], dtype=np.int64), lengths)
        self._codes = self._codes * self.vocab_size + pairs.indices
        n_unigrams = counts.unigrams.sum()
        self.unigram = (
            counts.unigrams / n_unigrams
            if n_unigrams > 0
            else np.full(self.vocab_size, 1.0 / self.vocab_size)
        )

    def backoff_row(self) -> np.ndarray:
        """The distribution used for every unseen context (unigram, else uniform)."""
        return self.unigram

    def pair_probabilities(self, contexts: np.ndarray, nexts: np.ndarray) -> np.ndarray:
        """P(next|context) elementwise, with backoff for unseen contexts."""
        contexts = np.asarray(contexts, dtype=np.int64)
        nexts = np.asarray(nexts, dtype=np.int64)
        queries = contexts * self.vocab_size + nexts
        probs = np.zeros(queries.shape, dtype=np.float64)
        if len(self._codes):
            where = np.minimum(np.searchsorted(self._codes, queries), len(self._codes) - 1)
            hit = self._codes[where] == queries
            probs[hit] = self.probs.data[where[hit]]
        unseen = ~self.seen[contexts]
        probs[unseen] = self.unigram[nexts[unseen]]
        return probs

    def surprisal(self, sequences: np.ndarray) -> np.ndarray:
        """Bigram surprisal in bits of tokens 1..T-1 of each sequence, shape [n, T-1]."""
        seqs = np.asarray(sequences, dtype=np.int64)
        _check_ids(seqs, self.vocab_size)
        with np.errstate(divide="ignore"):
            return -np.log2(self.pair_probabilities(seqs[:, :-1], seqs[:, 1:]))

    def add_one_unigram(self) -> np.ndarray:
        """Laplace-smoothed unigram probabilities: no held-out token gets probability zero."""
        counts = self.counts.unigrams
        return (counts + 1.0) / (counts.sum() + self.vocab_size)

    def smoothed_cross_entropy(self, sequences: np.ndarray, weight: float) -> float:
        """Mean CE (nats) of tokens 1..T-1 under weight·P_MLE + (1-weight)·P_add-one-unigram.

        The unsmoothed MLE assigns zero probability to unseen bigrams (and tokens), so its
        held-out cross-entropy is infinite; interpolation gives a finite baseline.
        """
        seqs = np.asarray(sequences, dtype=np.int64)
        contexts, nexts = seqs[:, :-1].ravel(), seqs[:, 1:].ravel()
        mle = self.pair_probabilities(contexts, nexts)
        mixed = weight * mle + (1.0 - weight) * self.add_one_unigram()[nexts]
        return float(-np.log(mixed).mean())

    def best_smoothed_cross_entropy(
        self, sequences: np.ndarray, weights: tuple[float, ...] = tuple(np.linspace(0.05, 0.95, 19))
    ) -> tuple[float, float]:
        """(lowest CE, its weight) over an interpolation grid, chosen on ``sequences`` itself.

        Tuning on the evaluation split favours the bigram baseline, so a model that beats it beats
        every interpolated bigram model in the grid.
        """
        scores = [(self.smoothed_cross_entropy(sequences, w), w) for w in weights]
        return min(scores)

    def baselines(self, sequences: np.ndarray) -> dict[str, float]:
        """Held-out CE (nats) of the best interpolated bigram model and of the unigram model."""
        bigram_loss, weight = self.best_smoothed_cross_entropy(sequences)
        nexts = np.asarray(sequences, dtype=np.int64)[:, 1:].ravel()
        return {
            "bigram_loss": bigram_loss,
            "bigram_weight": weight,
            "unigram_loss": float(-np.log(self.add_one_unigram()[nexts]).mean()),
        }
