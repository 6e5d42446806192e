"""The permutation null's sampling engine, private to `overlap` (docs/method.md §8).

`overlap` states the statistic and its two nulls; this module draws the null samples fast. What
it returns depends only on the masks and the seed: not on the number of threads, nor on which of
two exact products builds G (the cost model below only picks the faster). How a block's samples
are cut into tasks and which exact sampler its shape gets are part of the seeding: changing them
gives other, equally distributed samples for the same seed.

- rows null: per block, G = A Bᵀ without its all-zero rows (`row_intersections`), then
  Σ_i G[i, π(i)] per sample from uniform ordered draws of distinct units (`distinct_draws`),
  gathered a cache-sized band of rows at a time (`_rows_samples`). A block's samples are split
  into tasks, each with its own generator, drawn on a thread pool while the next blocks' G are
  built (`_NullSums`).
- entries null: one hypergeometric draw per block and sample (`_entries_block`).

"Measured" below means on the host the engine was written and benchmarked on (commit 1aa5e80,
2026-11-23): the 2-vCPU AMD EPYC VM (family 25, model 17, 2.6 GHz) of benchmarks/README.md, whose
section "Overlap permutation null" times the whole engine.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .architectures import UnitBlock

log = logging.getLogger(__name__)

# Samples per sampling task are capped so one task holds ≤ this many row draws: a memory bound
# (8 bytes per int64 draw, so 8 MiB per task, plus the gathered values); small tasks also balance
# the threads. No measurement recorded. Part of the seeding: a block's samples are cut into tasks
# of max(1, _DRAWS_PER_TASK // units) samples, each with its own generator.
_DRAWS_PER_TASK = 1 << 20
# Blocks whose samples may still be drawn while the next block's G is built. No measurement
# recorded; it trades memory (one G per pending block, at most _LOOKAHEAD + 1 alive) against
# sampling threads left idle while a large G is built. No effect on the samples.
_LOOKAHEAD = 3
# Bytes of G's rows gathered together: a band this large stays in L2 (2 MiB per core on the host
# in the module docstring, as on the 2-vCPU Intel Xeon family 6 model 167 host used since).
# No measurement recorded; it trades cache misses of the gather (bands larger than L2) against
# per-band overhead (one np.take and one sum per band). No effect on the samples.
_CACHE_BYTES = 1 << 20
# Cost model for G = A Bᵀ, seconds per operation, measured with 2 threads on the host in the
# module docstring: scipy.sparse multiply-add and scatter of an output entry; BLAS multiply-add in
# bf16 / float32, and the conversion of a dense output entry. It only picks the faster of two
# exact products (tests/test_overlap.py checks that both give G), so no sample depends on it; on
# another host a wrong pick costs time only.
_SPARSE_S, _SCATTER_S = 1e-8, 2e-8
_BF16_S, _FP32_S, _CONVERT_S = 1.2e-11, 3e-11, 3e-9


def draw_null(
    pieces: Iterable[tuple[UnitBlock, torch.Tensor, torch.Tensor]],
    *,
    null_model: str,
    permutations: int,
    seed: int,
    threads: int,
) -> tuple[np.ndarray, float, float]:
    """Null overlap counts summed over blocks (``permutations`` samples, int64, exact in any
    order) and the null's exact mean and variance. ``pieces``: every block with the bool
    [units, inputs] views of A and B, in block order, read one at a time.

    Block ``index`` draws from ``SeedSequence([seed, index])`` (entries null) or, chunk ``k`` of
    its samples, ``SeedSequence([seed, index, k])`` (rows null): see `overlap.null_samples`."""
    mean = var = 0.0
    with _NullSums(permutations, threads) as sums:
        for index, (block, va, vb) in enumerate(pieces):
            if null_model == "entries":
                rng = _generator(seed, index)
                draws, block_mean, block_var = _entries_block(va, vb, rng, permutations)
                sums.total += draws
            else:
                block_mean, block_var = _rows_block(sums, va, vb, block, index, seed)
            mean, var = mean + block_mean, var + block_var
        sums.collect(keep=0)
    return sums.total, mean, var


# ---------------------------------------------------------------------------------------------
# The rows null.


@dataclass(frozen=True)
class RowIntersections:
    """G = A Bᵀ of one block (G[i, j] = |A_i ∩ B_j|, the kept inputs units i and j share), stored
    as the rows of G or of Gᵀ that are not all zero, whichever are fewer.

    ``wide[k]`` is row ``rows[k]`` over all ``n_units`` columns: [m, units], smallest unsigned
    dtype that holds the counts. Σ_i G[i, π(i)] and Σ_j Gᵀ[j, π⁻¹(j)] have the same law.
    """

    wide: np.ndarray
    rows: np.ndarray
    n_units: int

    def moments(self) -> tuple[float, float]:
        """Exact mean and variance of Σ_i G[i, π(i)] over uniform permutations π (Hoeffding 1951).

        mean = T/R;  var = Σ_ij d_ij² / (R − 1) with d_ij = G_ij − r_i/R − s_j/R + T/R², and
        Σ d² = Σ G² − Σ_i r_i²/R − Σ_j s_j²/R + T²/R² (r, s: row and column sums of G, T its
        total, R units). Rows left out of ``wide`` are zero and add 0 to every sum.
        """
        units = float(self.n_units)
        r = self.wide.sum(1, dtype=np.float64)
        s = self.wide.sum(0, dtype=np.float64)
        total = float(r.sum())
        if self.n_units < 2:
            return total / units, 0.0
        squares = float(np.einsum("ij,ij->", self.wide, self.wide, dtype=np.float64))
        ss = squares - (r @ r) / units - (s @ s) / units + total**2 / units**2
        return total / units, max(ss, 0.0) / (units - 1)


def row_intersections(a_block: torch.Tensor, b_block: torch.Tensor) -> RowIntersections:
    """G = A Bᵀ of bool [units, inputs] views, without the all-zero rows (see `RowIntersections`).

    Only inputs kept by both masks matter, and a unit that keeps one of them has a non-zero G
    row. The product is a sparse one or a BLAS matmul, whichever the cost model expects to be
    faster: bf16 where no count can exceed 256 (exact: bf16 holds every integer ≤ 256), else
    float32 (exact below 2²⁴), else float64.
    """
    n_units, n_inputs = a_block.shape
    kept_a = torch.nonzero(a_block, as_tuple=True)  # (units, inputs) of the kept entries
    kept_b = torch.nonzero(b_block, as_tuple=True)
    # bincount: 15x faster than a bool sum(0) (measured on the host in the module docstring)
    col_a = torch.bincount(kept_a[1], minlength=n_inputs)
    col_b = torch.bincount(kept_b[1], minlength=n_inputs)
    shared = (col_a > 0) & (col_b > 0)
    col_rank = torch.cumsum(shared, 0) - 1  # input → its index among the shared inputs
    rows_a, entries_a = _shared_entries(kept_a, shared, col_rank)
    rows_b, entries_b = _shared_entries(kept_b, shared, col_rank)
    if len(rows_b) < len(rows_a):
        rows_a, entries_a, rows_b, entries_b = rows_b, entries_b, rows_a, entries_a
    m, n_b, n_shared = len(rows_a), len(rows_b), int(shared.sum())
    if m == 0:
        return RowIntersections(np.zeros((0, n_units), np.uint8), np.zeros(0, np.int64), n_units)
    bound = min(_max_row(entries_a[0], m), _max_row(entries_b[0], n_b))  # no count exceeds it
    wide = np.zeros((m, n_units), dtype=np.min_scalar_type(bound))
    columns = rows_b.numpy()
    bf16 = bound <= 256
    sparse_cost = int((col_a[shared] * col_b[shared]).sum())  # multiply-adds, sparse product
    sparse_s = _SPARSE_S * sparse_cost + _SCATTER_S * min(sparse_cost, m * n_b)
    dense_s = (_BF16_S if bf16 else _FP32_S) * m * n_shared * n_b + _CONVERT_S * m * n_b
    if dense_s < sparse_s:
        dtype = torch.bfloat16 if bf16 else torch.float32 if bound < 2**24 else torch.float64
        sa = _dense(entries_a, (m, n_shared), dtype)
        sb = _dense(entries_b, (n_b, n_shared), dtype)
        counts = torch.uint8 if wide.dtype == np.uint8 else torch.int32
        wide[:, columns] = (sa @ sb.T).to(counts).numpy()  # [m, b]
    else:
        product = (_csr(entries_a, (m, n_shared)) @ _csr(entries_b, (n_b, n_shared)).T).tocoo()
        wide[product.row, columns[product.col]] = product.data
    return RowIntersections(wide, rows_a.numpy(), n_units)


def _shared_entries(
    kept: tuple[torch.Tensor, torch.Tensor], shared: torch.Tensor, col_rank: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Units keeping a shared input, and the kept shared entries as (unit rank, input rank)."""
    rows, cols = kept
    keep = shared[cols]
    units, rank = torch.unique(rows[keep], return_inverse=True)
    return units, (rank, col_rank[cols[keep]])


def _max_row(rank: torch.Tensor, m: int) -> int:
    return int(torch.bincount(rank, minlength=m).max())


def _dense(entries: tuple[torch.Tensor, torch.Tensor], shape, dtype) -> torch.Tensor:
    out = torch.zeros(shape, dtype=dtype)
    out[entries] = 1
    return out


def _csr(entries: tuple[torch.Tensor, torch.Tensor], shape) -> sp.csr_matrix:
    rows, cols = (e.numpy() for e in entries)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=shape)


def distinct_draws(rng: np.random.Generator, n: int, m: int, size: int) -> np.ndarray:
    """``size`` independent uniform ordered samples of m distinct values from range(n): [size, m].

    Exact in every regime (numpy's bounded integers are unbiased); the cheapest is picked:

    - m² ≤ 4n: i.i.d. draws, every row that repeats a value redrawn. A row of i.i.d. draws
      conditioned on being distinct is uniform over ordered samples; a try succeeds with
      probability ≈ exp(−m²/2n) ≥ e⁻². O(m) per sample, vectorized.
    - m ≤ n/2: ``Generator.choice(n, m, replace=False)`` per sample, a partial Fisher–Yates of m
      steps (its tail is a uniform ordered sample).
    - otherwise: the first m columns of full Fisher–Yates shuffles, row by row (1-D shuffles
      release the GIL, so sampling threads run in parallel), or one ``permuted`` call for
      short rows, where per-call overhead would dominate.

    int64 values: numpy's fastest shuffle, and what ``np.take`` indexes with.
    """
    if m == 0:
        return np.zeros((size, 0), dtype=np.int64)
    if m * m <= 4 * n:
        out = rng.integers(0, n, size=(size, m), dtype=np.int64)
        redraw = np.arange(size)
        while len(redraw):
            ordered = np.sort(out[redraw], axis=1)
            redraw = redraw[(ordered[:, 1:] == ordered[:, :-1]).any(axis=1)]
            out[redraw] = rng.integers(0, n, size=(len(redraw), m), dtype=np.int64)
        return out
    # Below 1024 units one `permuted` call over [size, n] beats a loop of per-row calls. No
    # measurement recorded; it picks which exact sampler runs, so it is part of the seeding.
    if n < 1024:
        perms = np.broadcast_to(np.arange(n, dtype=np.int64), (size, n)).copy()
        return rng.permuted(perms, axis=1, out=perms)[:, :m]
    if 2 * m <= n:
        out = np.empty((size, m), dtype=np.int64)
        for row in out:
            row[:] = rng.choice(n, m, replace=False)
        return out
    perms = np.broadcast_to(np.arange(n, dtype=np.int64), (size, n)).copy()
    for row in perms:
        rng.shuffle(row)
    return perms[:, :m]


def _rows_samples(g: RowIntersections, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` draws of Σ_i G[i, π(i)]: the images π(i) of the m stored rows are a uniform
    ordered sample of distinct units, read from ``wide`` by flat gathers, a band of rows at a
    time so the band stays in cache."""
    m, n_units = g.wide.shape
    flat = distinct_draws(rng, n_units, m, size)  # [size, m]
    flat += np.arange(m, dtype=np.int64) * n_units  # row k's offset in wide
    source = g.wide.ravel()
    band = max(1, _CACHE_BYTES // (n_units * g.wide.itemsize))
    out = np.zeros(size, dtype=np.int64)
    for start in range(0, m, band):
        out += np.take(source, flat[:, start : start + band]).sum(axis=1, dtype=np.int64)
    return out


def _generator(seed: int, *key: int) -> np.random.Generator:
    # PCG64DXSM: numpy's recommended successor to PCG64, ~10% faster shuffles than PCG64
    # (measured on the host in the module docstring). Part of the seeding.
    return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence([seed, *key])))


def _entries_block(
    va: torch.Tensor, vb: torch.Tensor, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, float, float]:
    """One block under the entries null: ``size`` samples of its overlap and their exact mean and
    variance. Shuffling the kept entries within the block makes the overlap exactly
    hypergeometric(n, k_A, k_B), so each sample is one draw, not a shuffle."""
    n, k_a, k_b = va.numel(), int(np.count_nonzero(va)), int(np.count_nonzero(vb))
    draws = rng.hypergeometric(k_b, n - k_b, k_a, size)
    mean = k_a * k_b / n
    var = k_a * k_b * (n - k_a) * (n - k_b) / (n * n * (n - 1)) if n > 1 else 0.0
    return draws, mean, var


def _rows_block(
    sums: _NullSums,
    va: torch.Tensor,
    vb: torch.Tensor,
    block: UnitBlock,
    index: int,
    seed: int,
) -> tuple[float, float]:
    """One block under the rows null: its G and exact mean and variance, with its samples
    queued on ``sums``. G is built while the pool samples earlier blocks."""
    g = row_intersections(va, vb)
    block_mean, block_var = g.moments()
    log.debug(
        "block %d (layer %d %s): %d of %d units sampled, mean %.1f",
        index,
        block.layer,
        block.block,
        len(g.rows),
        g.n_units,
        block_mean,
    )
    sums.collect(keep=_LOOKAHEAD)  # at most _LOOKAHEAD + 1 G alive
    if g.rows.size:  # else no row of A shares an input with a row of B: always 0
        sums.submit_rows(g, seed, index)
    return block_mean, block_var


class _NullSums:
    """Null samples summed over blocks (``total``, int64, so exact in any order), with the thread
    pool that draws the rows null's samples.

    A block's samples are split into tasks of at most about `_DRAWS_PER_TASK` row draws, each
    with its own generator, so neither the split nor the draws depend on the number of threads.
    Tasks of the last blocks stay pending while the next G is built; `collect` bounds how many.
    """

    def __init__(self, permutations: int, threads: int) -> None:
        self.permutations = permutations
        self.total = np.zeros(permutations, dtype=np.int64)
        self._running: deque[list[tuple[int, Future]]] = deque()  # sampling tasks per block
        self._pool = ThreadPoolExecutor(max_workers=threads)

    def __enter__(self) -> _NullSums:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)  # as ThreadPoolExecutor's own exit: raising or not

    def submit_rows(self, g: RowIntersections, seed: int, index: int) -> None:
        """Queue the samples Σ_i G[i, π(i)] of block ``index``."""
        chunk = max(1, min(self.permutations, _DRAWS_PER_TASK // g.n_units))
        tasks = []
        for start in range(0, self.permutations, chunk):
            rng = _generator(seed, index, start // chunk)
            size = min(chunk, self.permutations - start)
            tasks.append((start, self._pool.submit(_rows_samples, g, rng, size)))
        self._running.append(tasks)

    def collect(self, keep: int) -> None:
        """Add the oldest blocks' samples to ``total`` until at most ``keep`` blocks are pending."""
        while len(self._running) > keep:
            for start, future in self._running.popleft():
                values = future.result()
                self.total[start : start + len(values)] += values
