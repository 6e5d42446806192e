"""Shared helpers for the benchmark scripts: setup, synthetic data, the tiny model, A/B timing.

Every benchmark runs its baseline and ours in one process on the same data, interleaving the
repetitions (the order rotates each round) so that a busy machine slows every variant alike, and
reports medians. ``BENCH_QUICK=1`` shrinks the sizes for a smoke run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger("bench")

QUICK = os.environ.get("BENCH_QUICK") == "1"
THREADS = 2


def setup() -> None:
    """Log to stderr and pin torch to 2 intra-op threads (the target machine's core count)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(THREADS)
    log.info(
        "torch %s, %d threads, quick=%s, snakemake running: %s, load average %s",
        torch.__version__,
        torch.get_num_threads(),
        QUICK,
        snakemake_running(),
        " ".join(f"{x:.2f}" for x in os.getloadavg()),
    )


def snakemake_running() -> bool:
    """Whether a pipeline run (``snakemake --cores``) is competing for the CPU."""
    found = subprocess.run(["pgrep", "-f", "snakemake --cores"], capture_output=True)
    return found.returncode == 0


def zipf_tokens(n_tokens: int, vocab_size: int, seed: int = 0, exponent: float = 1.1) -> np.ndarray:
    """An i.i.d. Zipf(``exponent``) token stream over ``vocab_size`` ids (id = frequency rank)."""
    weights = 1.0 / np.arange(1, vocab_size + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights / weights.sum())
    rng = np.random.default_rng(seed)
    out = np.empty(n_tokens, dtype=np.uint32)
    step = 1 << 24
    for start in range(0, n_tokens, step):
        draws = rng.random(min(step, n_tokens - start))
        out[start : start + len(draws)] = np.minimum(np.searchsorted(cdf, draws), vocab_size - 1)
    return out


def tiny_neox(vocab_size: int, seed: int = 0):
    """Random GPT-NeoX: hidden 256, 4 layers, 4 heads, intermediate 1024, untied unembedding."""
    from bigram_subnetworks.pretrain import ModelShape, build_model

    return build_model(ModelShape("gpt_neox", 256, 4, 4, 1024, 256), vocab_size, seed)


def interleaved(
    variants: dict[str, Callable[[], object]], reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of every variant; rounds rotate the order (A B C, B C A, C A B, ...)."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
        log.info(
            "round %d/%d: %s",
            rep + 1,
            reps,
            ", ".join(f"{n} {1000 * times[n][-1]:.0f} ms" for n in names),
        )
    return times


def median(values: list[float]) -> float:
    return float(np.median(values))


def emit(pairs: dict[str, float | int | str]) -> None:
    """The result line: space-separated name=value pairs, the last line of stdout."""
    text = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs.items()
    )
    print(text, flush=True)


def mask_config(batch_size: int, lam: float = 10.0, learning_rate: float = 5e-5):
    """The paper's hyperparameters (λ, lr, β×1.001, AdamW wd 0.01), no grad accumulation."""
    from bigram_subnetworks.training import MaskTrainingConfig

    return MaskTrainingConfig(
        lam=lam, learning_rate=learning_rate, weight_decay=0.01, beta_growth=1.001,
        max_steps=10**6, batch_size=batch_size, grad_accum=1, early_stop_fraction=0.01,
        attempts=1, spike_window=10, spike_absolute=0.25, spike_relative=1.25,
        spike_recovery_steps=100, log_every=100, seed=0,
    )  # fmt: skip
