"""Shared helpers for the benchmark scripts: setup, host info, synthetic data, the tiny model,
A/B timing.

Every benchmark runs its baseline and ours in one process on the same data, interleaving the
repetitions (the order rotates each round) so that a busy machine slows every variant alike, and
reports medians. ``BENCH_QUICK=1`` shrinks the sizes for a smoke run.

Numbers measured on one machine mean little on another without its description, so `emit` prints
the host (`host`: CPU model and vector extensions, cores and torch threads, GPU if any, library
versions, git commit) as the line just before the result line, in the same name=value format.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("bench")

QUICK = os.environ.get("BENCH_QUICK") == "1"
THREADS = 2
REPO = Path(__file__).resolve().parent.parent

# Vector extensions worth knowing for matrix products and elementwise kernels, as /proc/cpuinfo
# names them: x86 "flags" (AVX-512 and AMX with bf16/int8), Arm "Features" (NEON/SVE, bf16).
VECTOR_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512dq", "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme",
)  # fmt: skip


def setup(threads: int | None = THREADS, quick: bool = QUICK) -> None:
    """Log to stderr and pin torch to ``threads`` intra-op threads (default 2, the development
    machine's core count; None leaves torch's default, all cores); log the host. ``quick`` is
    only logged (a script with its own ``--quick`` flag passes it)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    if threads is not None:
        torch.set_num_threads(threads)
    log.info(
        "torch %s, %d threads, quick=%s, snakemake running: %s, load average %s",
        torch.__version__,
        torch.get_num_threads(),
        quick,
        snakemake_running(),
        " ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    log.info("host: %s", host_line())


def _cpuinfo() -> tuple[dict[str, str], int | None]:
    """The first processor's fields of /proc/cpuinfo and the number of physical cores (distinct
    (physical id, core id) pairs; None where the file does not say)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}, None
    blocks = [b for b in text.split("\n\n") if b.strip()]
    cores: set[tuple[str, str]] = set()
    first: dict[str, str] = {}
    for i, block in enumerate(blocks):
        pairs = (line.partition(":") for line in block.splitlines())
        fields = {key.strip(): value.strip() for key, _, value in pairs}
        if i == 0:
            first = fields
        if "physical id" in fields and "core id" in fields:
            cores.add((fields["physical id"], fields["core id"]))
    return first, len(cores) or None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _git_commit() -> str:
    """Short commit of this checkout, "+dirty" if tracked files differ from it; "unknown" when
    this is not a git checkout (a copied tree) or git is missing."""
    try:
        run = dict(cwd=REPO, capture_output=True, text=True, timeout=20, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def _gpu() -> dict[str, str | int]:
    """The first CUDA device (name, compute capability, memory), CUDA/cuDNN of this torch build,
    the driver (from nvidia-smi when it is on PATH); gpu=none without CUDA."""
    if not torch.cuda.is_available():
        return {"gpu": "none", "torch_cuda": torch.version.cuda or "none"}
    props = torch.cuda.get_device_properties(0)
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
        driver_version = driver.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        driver_version = "unknown"
    return {
        "gpu": props.name,
        "gpu_count": torch.cuda.device_count(),
        "gpu_cc": f"{props.major}.{props.minor}",
        "gpu_mem_gib": f"{props.total_memory / 2**30:.1f}",
        "gpu_sms": props.multi_processor_count,
        "torch_cuda": torch.version.cuda or "none",
        "cudnn": torch.backends.cudnn.version() or "none",
        "driver": driver_version,
    }


def host() -> dict[str, str | int]:
    """What the numbers were measured on: CPU model, family/model, vector extensions present
    (of `VECTOR_FLAGS`) and the one torch dispatches to, logical CPUs (all, and usable by this
    process), physical cores, torch's intra-/inter-op threads, RAM, the GPU if any, library
    versions and the git commit."""
    cpu, cores = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kib / 2**20:.1f}"
    except (OSError, IndexError, ValueError):
        mem = "unknown"
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "arch": platform.machine(),
        "isa": ",".join(f for f in VECTOR_FLAGS if f in flags) or "none",
        "torch_isa": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count() or 0,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?",
        "cores": cores or "unknown",
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mem_gib": mem,
        **_gpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "commit": _git_commit(),
    }


def token(value: object) -> str:
    """A value as one space-free token of a name=value line: whitespace runs become "_", "="
    becomes ":" (the CPU model "AMD EPYC 7B13" is written AMD_EPYC_7B13); empty is "none"."""
    text = re.sub(r"\s+", "_", str(value).strip()).replace("=", ":")
    return text or "none"


def host_line() -> str:
    """`host` as name=value pairs, every name prefixed ``host_``."""
    return " ".join(f"host_{k}={token(v)}" for k, v in host().items())


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
    """The host line (`host_line`), then the result line: space-separated name=value pairs, the
    last line of stdout (floats to 4 significant digits, strings as `token`s)."""
    text = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={token(v)}" for k, v in pairs.items()
    )
    print(host_line(), flush=True)
    print(text, flush=True)


def plain_step(model, optimizer, ids: torch.Tensor, precision: str = "fp32") -> None:
    """One step of plain fine-tuning: every weight trainable, hard-label CE on the next tokens
    (``precision`` bf16: the forward under CPU autocast, as our masked step with precision
    bf16)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=ids).logits
    logits = logits.float()
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()


def mask_config(
    batch_size: int, lam: float = 10.0, learning_rate: float = 5e-5, precision: str = "auto"
):
    """The paper's hyperparameters (λ, lr, β×1.001, AdamW wd 0.01), no grad accumulation."""
    from bigram_subnetworks.training import MaskTrainingConfig

    return MaskTrainingConfig(
        lam=lam, learning_rate=learning_rate, weight_decay=0.01, beta_growth=1.001,
        max_steps=10**6, batch_size=batch_size, grad_accum=1, early_stop_fraction=0.01,
        attempts=1, spike_window=10, spike_absolute=0.25, spike_relative=1.25,
        spike_recovery_steps=100, log_every=100, seed=0, precision=precision,
    )  # fmt: skip
