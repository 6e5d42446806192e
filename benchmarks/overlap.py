"""Overlap permutation null at Pythia-1B size: 10,000 rows-null samples vs the paper's loop.

Masks have Pythia-1B's maskable weights (16 GPT-NeoX layers, hidden 2048, intermediate 8192,
8 heads: 805M weights), built as tensors directly, without a model. A "bigram" mask keeps 4% of
layer 0's MLP and 0.08% of every other weight (0.24% in all, concentrated in the first MLP layer
as in the paper); an "optimal" mask keeps 3% everywhere plus 30% of the bigram mask's weights.
Entries are independent, so nearly every row of every block is non-empty: the hard case for the
rows null, whose cost grows with the rows that have something to permute.

The baseline is the reference's loop (`compute_circuit_overlaps.py`): per sample, np.random.shuffle
on the rows of every 2-D block of both masks, then Σ sum(A & B). It is timed on a few samples and
extrapolated to 10,000. The last stdout line is ``seconds=… speedup_vs_reference=…``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from _common import QUICK, THREADS, emit, setup

from bigram_subnetworks.architectures import GPT_NEOX, Heads, unit_blocks_for_shapes
from bigram_subnetworks.masking import Mask
from bigram_subnetworks.overlap import overlap_summary

log = logging.getLogger("bench")

HIDDEN, INTERMEDIATE, HEADS = 2048, 8192, 8
LAYERS = 2 if QUICK else 16
PERMUTATIONS = 200 if QUICK else 10_000
REFERENCE_SAMPLES = 1 if QUICK else 3


def pythia_1b_shapes(layers: int) -> dict[str, torch.Size]:
    shapes = {}
    for i in range(layers):
        prefix = f"gpt_neox.layers.{i}"
        shapes[f"{prefix}.attention.query_key_value.weight"] = torch.Size((3 * HIDDEN, HIDDEN))
        shapes[f"{prefix}.attention.dense.weight"] = torch.Size((HIDDEN, HIDDEN))
        shapes[f"{prefix}.mlp.dense_h_to_4h.weight"] = torch.Size((INTERMEDIATE, HIDDEN))
        shapes[f"{prefix}.mlp.dense_4h_to_h.weight"] = torch.Size((HIDDEN, INTERMEDIATE))
    return shapes


def synthetic_masks(shapes: dict[str, torch.Size], seed: int = 0) -> tuple[Mask, Mask]:
    g = torch.Generator().manual_seed(seed)
    bigram, optimal = {}, {}
    for name, shape in shapes.items():
        dense = name.startswith("gpt_neox.layers.0.mlp.")
        bigram[name] = torch.rand(shape, generator=g) < (0.04 if dense else 0.0008)
        optimal[name] = (torch.rand(shape, generator=g) < 0.03) | (
            bigram[name] & (torch.rand(shape, generator=g) < 0.3)
        )
    return Mask(bigram), Mask(optimal)


def reference_blocks(mask: Mask) -> list[np.ndarray]:
    """The reference's blocks for Pythia: QKV rows in thirds, other weights whole, contiguous."""
    out = []
    for name, tensor in mask.tensors.items():
        array = tensor.numpy().copy()  # shuffled in place: never the mask's own memory
        parts = np.split(array, 3) if "query_key_value" in name else [array]
        out.extend(np.ascontiguousarray(p) for p in parts)  # contiguous, as the reference does
    return out


def reference_samples(a: list[np.ndarray], b: list[np.ndarray], samples: int) -> np.ndarray:
    """The reference's null loop, verbatim in structure (the global np.random state)."""
    n_total = sum(x.size for x in a)
    out = np.empty(samples)
    for s in range(samples):
        for x, y in zip(a, b, strict=True):
            np.random.shuffle(x)
            np.random.shuffle(y)
        out[s] = sum(int(np.sum(x & y)) for x, y in zip(a, b, strict=True)) / n_total
    return out


def main() -> None:
    setup()
    shapes = pythia_1b_shapes(LAYERS)
    started = time.perf_counter()
    a, b = synthetic_masks(shapes)
    log.info(
        "masks: %d weights, bigram %.3f%%, optimal %.3f%% (built in %.1f s)",
        a.n_total,
        100 * a.density,
        100 * b.density,
        time.perf_counter() - started,
    )
    blocks = unit_blocks_for_shapes(GPT_NEOX, shapes, Heads(HEADS, HEADS))

    ref_a, ref_b = reference_blocks(a), reference_blocks(b)
    np.random.seed(0)
    reference_samples(ref_a, ref_b, 1)  # warm-up: page in the copies
    started = time.perf_counter()
    reference_samples(ref_a, ref_b, REFERENCE_SAMPLES)
    per_sample = (time.perf_counter() - started) / REFERENCE_SAMPLES
    reference_seconds = per_sample * PERMUTATIONS
    log.info(
        "reference loop: %.2f s per sample, %d samples ≈ %.0f s (%.1f h)",
        per_sample,
        PERMUTATIONS,
        reference_seconds,
        reference_seconds / 3600,
    )
    del ref_a, ref_b

    started = time.perf_counter()
    summary = overlap_summary(
        a, b, blocks, null_model="rows", permutations=PERMUTATIONS, seed=0, threads=THREADS
    )
    seconds = time.perf_counter() - started
    log.info("rows null, %d samples, %d threads: %.1f s", PERMUTATIONS, THREADS, seconds)
    log.info("summary: %s", summary)

    started = time.perf_counter()
    entries = overlap_summary(
        a, b, blocks, null_model="entries", permutations=PERMUTATIONS, seed=0, threads=THREADS
    )
    log.info("entries null: %.1f s; summary: %s", time.perf_counter() - started, entries)
    emit({"seconds": seconds, "speedup_vs_reference": reference_seconds / seconds})


if __name__ == "__main__":
    main()
