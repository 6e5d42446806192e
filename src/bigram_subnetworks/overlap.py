"""How much two subnetworks share, against a permutation null (docs/method.md §8).

Masks are compared over output-unit blocks (`architectures.UnitBlock`: attn_q/k/v/o, mlp_in/out
per layer, rows = output units), so this module needs no architecture knowledge. Two nulls:

- ``"rows"`` (the paper's): the rows of every block are permuted, independently for both masks.
  Permuting both is distributed like permuting only B's rows (σ, τ uniform ⇒ τσ⁻¹ uniform), and
  with G = A Bᵀ (G[i, j] = |A_i ∩ B_j|, the row-by-row intersection counts) a block's permuted
  overlap is Σ_i G[i, π(i)]. Sampling therefore needs one gather per row and sample, not a pass
  over the masks.
- ``"entries"``: kept weights are shuffled uniformly within each block. A block's overlap is then
  exactly hypergeometric(n, k_A, k_B), drawn directly.

Blocks are independent, so a sample is the sum of one draw per block. Nothing here touches a
model; masks may come from files, and the magnitude control (`magnitude_mask`) needs only the
weights' values.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .architectures import ATTENTION_BLOCKS, BLOCKS, UnitBlock
from .masking import Mask

log = logging.getLogger(__name__)

NULL_MODELS = ("rows", "entries")
# docs/method.md §8: the configured pair, and its control (the bigram subnetwork against the
# magnitude mask of the optimal subnetwork's size, `magnitude_mask`).
PAIRS = ("bigram-optimal", "bigram-magnitude")
# Samples per sampling task are capped so one task holds ≤ this many row draws (memory bound:
# 8 bytes per draw, plus the gathered values); small tasks also balance the threads.
_DRAWS_PER_TASK = 1 << 20
# Blocks whose samples may still be drawn while the next block's G is built (memory: one G each).
_LOOKAHEAD = 3
# Rows of G gathered together: a band this large stays in L2 (2 MiB per core here).
_CACHE_BYTES = 1 << 20
# Cost model for G = A Bᵀ, seconds per operation (2 threads, measured here): scipy.sparse
# multiply-add and scatter of an output entry; BLAS multiply-add in bf16 / float32, and the
# conversion of a dense output entry.
_SPARSE_S, _SCATTER_S = 1e-8, 2e-8
_BF16_S, _FP32_S, _CONVERT_S = 1.2e-11, 3e-11, 3e-9


def check_pair(a: Mask, b: Mask, blocks: Sequence[UnitBlock]) -> None:
    """Raise ValueError (naming the weight) unless both masks and the blocks cover the same
    weights with the same shapes, and the blocks of each weight add up to its size."""
    for name in sorted(set(a.tensors) ^ set(b.tensors)):
        which = "A" if name in a.tensors else "B"
        raise ValueError(f"weight {name!r} is only in mask {which}")
    for name, tensor in a.tensors.items():
        if tensor.shape != b.tensors[name].shape:
            raise ValueError(
                f"weight {name!r} has shape {tuple(tensor.shape)} in mask A and "
                f"{tuple(b.tensors[name].shape)} in mask B"
            )
    covered: dict[str, int] = {}
    for block in blocks:
        if block.name not in a.tensors:
            raise ValueError(f"weight {block.name!r} of block {block.block} is not in the masks")
        if tuple(a.tensors[block.name].shape) != block.shape:
            raise ValueError(
                f"weight {block.name!r} has shape {tuple(a.tensors[block.name].shape)} in the "
                f"masks, its {block.block} block expects {block.shape}"
            )
        units, inputs = block.view_shape
        covered[block.name] = covered.get(block.name, 0) + units * inputs
    for name, tensor in a.tensors.items():
        if covered.get(name, 0) != tensor.numel():
            raise ValueError(
                f"weight {name!r}: blocks cover {covered.get(name, 0)} of {tensor.numel()} entries"
            )


def _views(a: Mask, b: Mask, block: UnitBlock) -> tuple[torch.Tensor, torch.Tensor]:
    return block.view(a.tensors[block.name].cpu()), block.view(b.tensors[block.name].cpu())


# numpy reductions over bool masks: 15-50x faster than torch's bool sum here (measured).
def _count(mask: torch.Tensor | np.ndarray) -> int:
    return int(np.count_nonzero(np.asarray(mask)))


def _axis_counts(mask: torch.Tensor | np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(mask).view(np.uint8).sum(axis, dtype=np.int64)


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
    col_a = torch.bincount(kept_a[1], minlength=n_inputs)  # 15x faster than a bool sum(0)
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
    # PCG64DXSM: numpy's recommended successor to PCG64, ~10% faster shuffles here (measured).
    return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence([seed, *key])))


# ---------------------------------------------------------------------------------------------
# Public API.


def _validate(null_model: str, permutations: int) -> None:
    if null_model not in NULL_MODELS:
        raise ValueError(f"null_model must be one of {NULL_MODELS}, got {null_model!r}")
    if permutations < 1:
        raise ValueError(f"permutations must be ≥ 1, got {permutations}")


def null_samples(
    a: Mask,
    b: Mask,
    blocks: Sequence[UnitBlock],
    *,
    null_model: str,
    permutations: int,
    seed: int,
    threads: int = 1,
) -> tuple[np.ndarray, float, float]:
    """Overlap counts |A'∩B'| of ``permutations`` null samples, and the null's exact mean and
    variance (counts, not fractions).

    Each block (and each chunk of a block's samples) gets its own generator, seeded with
    ``SeedSequence([seed, block index, chunk index])``; chunk sizes depend only on the block's
    shape, so the samples depend on the seed and the masks only, not on ``threads``.
    """
    _validate(null_model, permutations)
    check_pair(a, b, blocks)
    started = time.perf_counter()
    mean = var = 0.0
    with _NullSums(permutations, threads) as sums:
        for index, block in enumerate(blocks):
            va, vb = _views(a, b, block)
            if null_model == "entries":
                rng = _generator(seed, index)
                draws, block_mean, block_var = _entries_block(va, vb, rng, permutations)
                sums.total += draws
            else:
                block_mean, block_var = _rows_block(sums, va, vb, block, index, seed)
            mean, var = mean + block_mean, var + block_var
        sums.collect(keep=0)
    log.info(
        "%s null: %d samples over %d blocks in %.2f s",
        null_model,
        permutations,
        len(blocks),
        time.perf_counter() - started,
    )
    return sums.total, mean, var


def _entries_block(
    va: torch.Tensor, vb: torch.Tensor, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, float, float]:
    """One block under the entries null: ``size`` samples of its overlap and their exact mean and
    variance. Shuffling the kept entries within the block makes the overlap exactly
    hypergeometric(n, k_A, k_B), so each sample is one draw, not a shuffle."""
    n, k_a, k_b = va.numel(), _count(va), _count(vb)
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


def overlap_summary(
    a: Mask,
    b: Mask,
    blocks: Sequence[UnitBlock],
    *,
    null_model: str,
    permutations: int,
    seed: int,
    threads: int = 1,
) -> dict[str, float | int | str]:
    """Actual overlap of A and B and its permutation null (docs/method.md §8).

    With N = all maskable weights: ``overlap`` = |A∩B|/N, ``fraction_a_in_b`` = |A∩B|/|A|,
    ``density_a`` = |A|/N, ``density_b`` = |B|/N. ``expected_overlap`` and ``null_std`` are the
    mean and standard deviation of the null samples (/N); ``expected_overlap_exact`` and
    ``null_std_exact`` the null's exact values (/N); ``z_score`` = (overlap − expected)/std from
    the samples. ``p_value`` = (#{samples ≥ actual} + 1)/(permutations + 1), the permutation
    p-value that counts the observed masks as one draw, so it is never 0 and the test keeps its
    level (Phipson & Smyth 2010); ``p_value_paper`` is the reference's plain fraction
    #{samples ≥ actual}/permutations.
    """
    started = time.perf_counter()
    check_pair(a, b, blocks)
    samples, mean, var = null_samples(
        a, b, blocks, null_model=null_model, permutations=permutations, seed=seed, threads=threads
    )
    counts = _count_columns(a, b)
    summary: dict[str, float | int | str] = {
        **counts,
        **_null_columns(samples, mean, var, counts["n_both"], counts["n_total"]),
        "null_model": null_model,
        "permutations": permutations,
        "null_seed": seed,
    }
    log.info(
        "overlap %.3g (expected %.3g ± %.2g, z %.1f, p %.3g); %.3g of A in B; %.2f s",
        summary["overlap"],
        summary["expected_overlap"],
        summary["null_std"],
        summary["z_score"],
        summary["p_value"],
        summary["fraction_a_in_b"],
        time.perf_counter() - started,
    )
    return summary


def _count_columns(a: Mask, b: Mask) -> dict[str, int | float]:
    """The summary's actual counts: N, |A|, |B|, |A∩B| over all weights, and their ratios."""
    n_total = a.n_total
    n_a = sum(_count(t.cpu()) for t in a.tensors.values())
    n_b = sum(_count(t.cpu()) for t in b.tensors.values())
    n_both = sum(
        _count(np.logical_and(t.cpu().numpy(), b.tensors[name].cpu().numpy()))
        for name, t in a.tensors.items()
    )
    return {
        "n_total": n_total,
        "n_a": n_a,
        "n_b": n_b,
        "n_both": n_both,
        "overlap": n_both / n_total,
        "fraction_a_in_b": n_both / n_a if n_a else float("nan"),
        "density_a": n_a / n_total,
        "density_b": n_b / n_total,
    }


def _null_columns(
    samples: np.ndarray, mean: float, var: float, n_both: int, n_total: int
) -> dict[str, int | float]:
    """The summary's null columns (see `overlap_summary`) from the null samples, the null's
    exact mean and variance, and the actual overlap count."""
    permutations = len(samples)
    at_least = int((samples >= n_both).sum())
    sample_mean = float(samples.mean())
    sample_std = float(samples.std(ddof=1)) if permutations > 1 else 0.0
    return {
        "expected_overlap": sample_mean / n_total,
        "expected_overlap_exact": mean / n_total,
        "null_std": sample_std / n_total,
        "null_std_exact": float(np.sqrt(var)) / n_total,
        "z_score": (n_both - sample_mean) / sample_std if sample_std > 0 else float("nan"),
        "n_null_at_least_actual": at_least,
        "p_value": (at_least + 1) / (permutations + 1),
        "p_value_paper": at_least / permutations,
    }


def magnitude_mask(weights: Mapping[str, torch.Tensor], like: Mask) -> Mask:
    """The largest-|W| weights of every matrix, as many as ``like`` keeps in it: a magnitude-
    pruning mask of ``like``'s size, trained on nothing (docs/method.md §8). Ties in |W| go to the
    entry stored first.

    Ranked per matrix, not across them: matrices of one model differ in scale (attention and MLP
    matrices, projections whose inputs a norm rescales), so a global ranking's share of each
    matrix would follow its scale. With ``like``'s counts the control differs from ``like`` only
    in which weights of each matrix it keeps, and both face the same block structure in the null.
    """
    out = {}
    for name, keep in like.tensors.items():
        weight = weights.get(name)
        if weight is None or weight.shape != keep.shape:
            found = None if weight is None else tuple(weight.shape)
            raise ValueError(
                f"weight {name!r}: the mask has shape {tuple(keep.shape)}, the weights {found}"
            )
        magnitude = weight.detach().abs().flatten().cpu()
        order = torch.argsort(magnitude, descending=True, stable=True)
        chosen = torch.zeros(magnitude.numel(), dtype=torch.bool)
        chosen[order[: _count(keep.cpu())]] = True
        out[name] = chosen.view(keep.shape)
    return Mask(out)


def overlap_with_control(
    bigram: Mask,
    optimal: Mask,
    control: Mask,
    blocks: Sequence[UnitBlock],
    *,
    null_model: str,
    permutations: int,
    seed: int,
    threads: int = 1,
) -> tuple[list[dict[str, float | int | str]], pd.DataFrame]:
    """`overlap_summary` and `overlap_breakdown` of the configured pair (bigram, optimal) and of
    its control (bigram, ``control``, normally `magnitude_mask` of ``optimal``), with the same
    statistic, null model, permutations and seed (docs/method.md §8), each row tagged with its
    ``pair`` (`PAIRS`): the bigram–optimal excess over the null, read against the excess the
    bigram subnetwork has with any large-weight mask of the optimal one's size."""
    summaries, breakdowns = [], []
    for pair, other in zip(PAIRS, (optimal, control), strict=True):
        summary = overlap_summary(
            bigram, other, blocks, null_model=null_model, permutations=permutations, seed=seed,
            threads=threads,
        )  # fmt: skip
        summaries.append({"pair": pair, **summary})
        breakdown = overlap_breakdown(bigram, other, blocks, null_model=null_model)
        breakdowns.append(breakdown.assign(pair=pair))
    return summaries, pd.concat(breakdowns, ignore_index=True)


BREAKDOWN_COLUMNS = (
    "layer",
    "block",
    "head",
    "n_total",
    "n_a",
    "n_b",
    "n_both",
    "frac_shared",
    "frac_only_a",
    "frac_only_b",
    "expected_both",
)


def overlap_breakdown(
    a: Mask,
    b: Mask,
    blocks: Sequence[UnitBlock],
    *,
    null_model: str,
    per_head: bool = True,
) -> pd.DataFrame:
    """Tidy per-(layer, block, head) counts of A, B and A∩B, one row per block or attention head.

    Fractions are of the piece's weights, as in the reference's per-layer summary:
    ``frac_shared`` = |A∩B|/n, ``frac_only_a`` = |A∖B|/n, ``frac_only_b`` = |B∖A|/n.
    ``expected_both`` is E|A'∩B'| with both masks permuted within the whole block, exactly:
    rows null, a piece of rows H_r × inputs H_c: |H_r|/R² · Σ_{c∈H_c} colA_c·colB_c (the block:
    Σ_c colA_c·colB_c / R); entries null: n_piece · k_A·k_B / n². ``head`` is the attention head
    (q/k/v: its output units; attn_o: its input features), <NA> for MLP blocks or with
    ``per_head=False``.
    """
    _validate(null_model, 1)
    check_pair(a, b, blocks)
    frames = [_block_breakdown(a, b, block, null_model, per_head) for block in blocks]
    return _in_model_order(pd.concat(frames, ignore_index=True))


def _block_breakdown(
    a: Mask, b: Mask, block: UnitBlock, null_model: str, per_head: bool
) -> pd.DataFrame:
    """`overlap_breakdown`'s rows of one block: one per attention head if split, else one."""
    va, vb = (v.numpy() for v in _views(a, b, block))
    split = bool(per_head and block.block in ATTENTION_BLOCKS and block.num_heads)
    heads = block.num_heads if split else 1
    n_a, n_b, n_both = (_piece_counts(t, block, split) for t in (va, vb, va & vb))
    n_piece = va.size // heads
    return pd.DataFrame(
        {
            "layer": block.layer,
            "block": block.block,
            "head": pd.array(list(range(heads)) if split else [None], dtype="Int64"),
            "n_total": n_piece,
            "n_a": n_a,
            "n_b": n_b,
            "n_both": n_both,
            "frac_shared": n_both / n_piece,
            "frac_only_a": (n_a - n_both) / n_piece,
            "frac_only_b": (n_b - n_both) / n_piece,
            "expected_both": _expected_both(va, vb, block, split, heads, null_model),
        }
    )


def _piece_counts(t: np.ndarray, block: UnitBlock, split: bool) -> np.ndarray:
    """Kept entries of each piece of a bool [units, inputs] view: of each attention head if
    ``split`` (q/k/v: its output units; attn_o: its input features), else of the whole block."""
    if not split:
        return np.array([_count(t)])
    return _axis_counts(t, 1 - block.head_axis).reshape(block.num_heads, -1).sum(1)


def _expected_both(
    va: np.ndarray, vb: np.ndarray, block: UnitBlock, split: bool, heads: int, null_model: str
) -> np.ndarray:
    """E|A'∩B'| of each of the block's ``heads`` pieces, both masks permuted within the whole
    block (the formulas are in `overlap_breakdown`); it needs only the column counts."""
    n_units = block.view_shape[0]
    col_a = _axis_counts(va, 0).astype(np.float64)
    col_b = _axis_counts(vb, 0).astype(np.float64)
    n_block = va.size
    n_piece = n_block // heads
    if null_model == "entries":
        return np.full(heads, n_piece * col_a.sum() * col_b.sum() / n_block**2)
    if split and block.head_axis == 1:  # attn_o heads own input columns
        return (col_a * col_b).reshape(heads, -1).sum(1) / n_units
    # pieces made of rows: equal shares of the block's mean
    return np.full(heads, (col_a @ col_b) / n_units / heads)


def _in_model_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by layer, then block in `BLOCKS` (forward, not alphabetical) order, then head."""
    order = table["block"].map({name: i for i, name in enumerate(BLOCKS)})
    keys = pd.DataFrame({"layer": table["layer"], "order": order, "head": table["head"]})
    return table.loc[keys.sort_values(["layer", "order", "head"]).index].reset_index(drop=True)


def layer_summary(breakdown: pd.DataFrame) -> pd.DataFrame:
    """The reference's per-layer lines: shared / only-A / only-B fractions for attention and MLP
    of every layer, plus ``part == "all"`` for each layer and ``layer == -1`` for everything."""
    table = breakdown.assign(
        part=np.where(breakdown["block"].isin(ATTENTION_BLOCKS), "attention", "mlp")
    )
    sums = ["n_total", "n_a", "n_b", "n_both", "expected_both"]
    parts = table.groupby(["layer", "part"], as_index=False)[sums].sum()
    layers = table.groupby("layer", as_index=False)[sums].sum().assign(part="all")
    overall = table[sums].sum().to_frame().T.assign(layer=-1, part="all")
    out = pd.concat([parts, layers, overall], ignore_index=True)
    out = out.astype({c: "int64" for c in ["layer", "n_total", "n_a", "n_b", "n_both"]})
    out["frac_shared"] = out["n_both"] / out["n_total"]
    out["frac_only_a"] = (out["n_a"] - out["n_both"]) / out["n_total"]
    out["frac_only_b"] = (out["n_b"] - out["n_both"]) / out["n_total"]
    return out.sort_values(["layer", "part"], ignore_index=True)
