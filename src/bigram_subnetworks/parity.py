"""How a mask trained here compares with the authors' released mask for the same model (issue 7).

One flat dict per pair, a row of the tidy parity table: the size of each mask, the share of each
in the first MLP layer (the paper's "concentrated in the first MLP layer"), their overlap against
`overlap`'s permutation null, Jaccard similarity and containment both ways. Mask A is ours, mask B
theirs (`released.load_released_mask`); both cover the model's maskable weights, which
``blocks`` (`architectures.model_unit_blocks` or `unit_blocks_for_shapes`) split into blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .architectures import UnitBlock
from .masking import Mask
from .overlap import layer_summary, overlap_breakdown, overlap_summary

# overlap_summary's names for A and B → ours and theirs.
_RENAMED = {
    "n_a": "n_ours",
    "n_b": "n_theirs",
    "density_a": "kept_fraction_ours",
    "density_b": "kept_fraction_theirs",
    "fraction_a_in_b": "ours_in_theirs",
}

# parity_row's headline columns, in this order; the rest follow in overlap_summary's order.
_LEADING = (
    "n_total",
    "n_ours",
    "n_theirs",
    "n_both",
    "kept_fraction_ours",
    "kept_fraction_theirs",
    "first_mlp_kept_ours",
    "first_mlp_share_ours",
    "first_mlp_kept_theirs",
    "first_mlp_share_theirs",
    "overlap",
    "expected_overlap",
    "p_value",
    "jaccard",
    "ours_in_theirs",
    "theirs_in_ours",
)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def parity_row(
    ours: Mask, theirs: Mask, blocks: Sequence[UnitBlock], **null: Any
) -> dict[str, float | int | str]:
    """Our mask against theirs over the same weights; ``null`` are the permutation-null
    settings of `overlap.overlap_summary` (``null_model``, ``permutations``, ``seed``,
    ``threads``).

    Columns: ``n_total`` (N, maskable weights), ``n_ours``, ``n_theirs``, ``n_both``;
    ``kept_fraction_ours`` / ``_theirs`` = |A|/N, |B|/N; ``first_mlp_kept_*`` and
    ``first_mlp_share_*`` = the kept weights in layer 0's mlp_in and mlp_out and their share of
    the mask's kept weights; ``overlap`` = |A∩B|/N with every null column of
    `overlap.overlap_summary` (``expected_overlap``, ``null_std``, ``z_score``, ``p_value``, …);
    ``jaccard`` = |A∩B|/|A∪B|; ``ours_in_theirs`` = |A∩B|/|A| and ``theirs_in_ours`` =
    |A∩B|/|B|. Ratios over an empty set are NaN.
    """
    summary = overlap_summary(ours, theirs, blocks, **null)
    row = {_RENAMED.get(key, key): value for key, value in summary.items()}
    n_ours, n_theirs, n_both = row["n_ours"], row["n_theirs"], row["n_both"]
    row["theirs_in_ours"] = _ratio(n_both, n_theirs)
    row["jaccard"] = _ratio(n_both, n_ours + n_theirs - n_both)
    kept = _first_mlp_kept(ours, theirs, blocks, null["null_model"])
    for who, total in (("ours", n_ours), ("theirs", n_theirs)):
        row[f"first_mlp_kept_{who}"] = kept[who]
        row[f"first_mlp_share_{who}"] = _ratio(kept[who], total)
    return {key: row[key] for key in _LEADING} | {
        key: value for key, value in row.items() if key not in _LEADING
    }


def _first_mlp_kept(
    ours: Mask, theirs: Mask, blocks: Sequence[UnitBlock], null_model: str
) -> dict[str, int]:
    """Kept weights of each mask in layer 0's MLP (mlp_in and mlp_out), where the paper finds
    the bigram subnetwork concentrated; read off the per-layer breakdown."""
    layers = layer_summary(
        overlap_breakdown(ours, theirs, blocks, null_model=null_model, per_head=False)
    )
    first_mlp = layers[(layers["layer"] == 0) & (layers["part"] == "mlp")]
    return {
        "ours": int(first_mlp["n_a"].sum()),
        "theirs": int(first_mlp["n_b"].sum()),
    }
