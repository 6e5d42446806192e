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


def seeded_batches(
    tokens: np.ndarray, batch_size: int, seed: int, start: int = 0
) -> Iterator[torch.Tensor]:
    """Endless int64 batches of sequences in an order seeded by (seed, epoch), reshuffled every
    epoch; the incomplete last batch of an epoch is dropped. Rows are read in sorted order, which
    is kind to memory-mapped token files. ``start`` skips that many batches without reading them:
    the order depends on (seed, batch index) only, so a resumed run sees the batches it would
    have seen."""
    if len(tokens) < batch_size:
        raise ValueError(f"{len(tokens)} training sequences are fewer than a batch ({batch_size})")
    if start < 0:
        raise ValueError(f"cannot start at batch {start}")
    per_epoch = len(tokens) // batch_size
    epoch, skip = divmod(start, per_epoch)
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(tokens))
        for first in range(skip * batch_size, per_epoch * batch_size, batch_size):
            batch = tokens[np.sort(order[first : first + batch_size])]
            yield torch.from_numpy(np.asarray(batch, dtype=np.int64))
        epoch, skip = epoch + 1, 0
