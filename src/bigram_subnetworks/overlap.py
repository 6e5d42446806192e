"""How much two subnetworks share, against a permutation null (docs/method.md §8).

Masks are compared over output-unit blocks (`architectures.UnitBlock`: attn_q/k/v/o, mlp_in/out
per layer, rows = output units), so this module needs no architecture knowledge. Two nulls:

- ``"rows"`` (the paper's): the rows of every block are permuted, independently for both masks.
  Permuting both is distributed like permuting only B's rows (σ, τ uniform ⇒ τσ⁻¹ uniform), and
  with G = A Bᵀ (G[i, j] = |A_i ∩ B_j|, the row-by-row intersection counts) a block's permuted
  overlap is Σ_i G[i, π(i)], so a sample needs one gather per row, not a pass over the masks.
- ``"entries"``: kept weights are shuffled uniformly within each block. A block's overlap is then
  exactly hypergeometric(n, k_A, k_B), drawn directly.

Blocks are independent, so a sample is the sum of one draw per block. The samples are drawn by
the private `_overlap_null` (thread pool, chunking, sampling kernels and their tuning); they
depend on the masks and the seed only. Nothing here touches a model; masks may come from files,
and the magnitude control (`magnitude_mask`) needs only the weights' values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import _overlap_null
from .architectures import ATTENTION_BLOCKS, BLOCKS, UnitBlock
from .masking import Mask

log = logging.getLogger(__name__)

NULL_MODELS = ("rows", "entries")
# docs/method.md §8: the configured pair, and its control (the bigram subnetwork against the
# magnitude mask of the optimal subnetwork's size, `magnitude_mask`).
PAIRS = ("bigram-optimal", "bigram-magnitude")


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


# numpy reductions over bool masks: 15-50x faster than torch's bool sum (measured on the host
# named in `_overlap_null`).
def _count(mask: torch.Tensor | np.ndarray) -> int:
    return int(np.count_nonzero(np.asarray(mask)))


def _axis_counts(mask: torch.Tensor | np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(mask).view(np.uint8).sum(axis, dtype=np.int64)


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
    pieces = ((block, *_views(a, b, block)) for block in blocks)  # one block's views at a time
    samples, mean, var = _overlap_null.draw_null(
        pieces, null_model=null_model, permutations=permutations, seed=seed, threads=threads
    )
    log.info(
        "%s null: %d samples over %d blocks in %.2f s",
        null_model,
        permutations,
        len(blocks),
        time.perf_counter() - started,
    )
    return samples, mean, var


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
