"""Device, precision and data order shared by pretraining and mask training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def default_device(device: torch.device | str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on the CPU (bf16 matmuls are slow there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seeded_batches(tokens: np.ndarray, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless int64 batches of sequences in an order seeded by (seed, epoch), reshuffled every
    epoch; the incomplete last batch of an epoch is dropped. Rows are read in sorted order, which
    is kind to memory-mapped token files."""
    if len(tokens) < batch_size:
        raise ValueError(f"{len(tokens)} training sequences are fewer than a batch ({batch_size})")
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(tokens))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = tokens[np.sort(order[start : start + batch_size])]
            yield torch.from_numpy(np.asarray(batch, dtype=np.int64))
        epoch += 1
