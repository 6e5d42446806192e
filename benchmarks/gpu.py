"""Masked training on a CUDA GPU at the paper's scale: time per step and peak memory against the
README's estimates, and the bf16 path's loss against fp32 on the CPU.

Random models of Pythia-160M's and Pythia-1B's shapes (the library's GPT-NeoX build: parallel
residual, untied unembedding, rotary on 25% of each head; 50,304 logits), no download. Bigram
rows from a synthetic Zipf(1.1) stream of 4.1M tokens over Pythia's 50,277 real tokens, so the
target drops the 27 padded logits as it does for Pythia. For each shape:
  time    the library's own `training._step` (masked weights once per step, bf16 autocast with
          the unembedding in fp32, sparse `BigramTarget` on the GPU, fused AdamW on the scores),
          then `decision_counts` and the β growth, as `train_attempt` runs them every step; the
          paper's batch of 32 × 128 tokens (Pythia-1B: 2 micro-batches of 16, as the paper and
          configs/paper.yaml), a new batch every step in the library's data order; a few
          warm-up steps, then 50 timed ones, each between two `torch.cuda.synchronize()`.
  memory  `torch.cuda.max_memory_allocated` / `max_memory_reserved` over warm-up and timed
          steps, against the README's per-job estimate.
  check   one masked forward and the target's CE with the same weights and the same random
          scores (soft masks spread over (0, 1)), on the CPU in fp32 and on the GPU under the
          library's bf16 autocast: the two losses must agree within `TOLERANCE`. Pythia-160M on
          the whole batch; Pythia-1B on its first `check_rows` sequences only, to keep the CPU
          forward of a 1B model to seconds. The weights are random (logits near 0), so this
          checks the path (masked weights, autocast, fp32 unembedding, target on the device),
          not bf16's accuracy on trained weights with larger logits.
Why: no GPU has run this project so far; these are the numbers the README's "Expected GPU
memory and time per model" table estimates, and the first check that the CUDA path agrees with
the CPU path the tests cover.

``--quick`` (or ``BENCH_QUICK=1``) shrinks everything (2 layers of each width, 4,000 tokens and
4,032 logits, batch 4 × 32, 1 warm-up and 3 timed steps) and runs on the CPU when there is no
GPU: a smoke test of the script. There the timed steps run in fp32 (the library's CPU path) and
the check's "device" side is the CPU under bf16 autocast, so the GPU path is not exercised.
Budget on an H100/H200-class GPU: well under 10 minutes (building the models on the CPU and the
CPU side of the checks take most of it). Run it through gpu.sh (nvidia-smi check, timeout, log).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import os
import sys
import time

import numpy as np
import torch
from _common import QUICK, emit, log, mask_config, setup, zipf_tokens

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import ContinuousSparsification
from bigram_subnetworks.pretrain import ModelShape, build_model
from bigram_subnetworks.runtime import autocast, model_logits, seeded_batches
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step, score_optimizer

TOLERANCE = 0.05  # nats: |CE on the CPU in fp32 − CE on the GPU under bf16 autocast|
GB = 1e9  # the README's GB (4.0 GB for 1.01 B fp32 weights)
CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Case:
    key: str
    title: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    grad_accum: int
    lam: float  # configs/paper.yaml's λ of this model's bigram subnetwork (timing ignores it)
    estimate_gb: float
    check_rows: int


# estimate_gb: README.md, "Expected GPU memory and time per model (estimates, not measured)",
# column "memory per job": Pythia-160M ≈ 11 GB, Pythia-1B ≈ 34 GB (its breakdown under "Memory on
# a GPU (estimate)"; that one counts a 0.6 GB table of 50M bigrams, this synthetic one is smaller).
CASES = (
    Case("160m", "Pythia-160M", 768, 12, 12, 3072, 1, 10.0, 11.0, 32),
    Case("1b", "Pythia-1B", 2048, 16, 8, 8192, 2, 100.0, 34.0, 4),
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    tokens: int  # vocabulary of the bigram table
    logits: int  # the model's output size (Pythia pads 50,277 to 50,304)
    table_sequences: int
    seq: int
    batch: int
    warmup: int
    steps: int
    layers: int | None  # None: each case's own


FULL = Sizes(50_277, 50_304, 32_000, 128, 32, 3, 50, None)  # 4.1M table tokens
SMOKE = Sizes(4_000, 4_032, 2_000, 32, 4, 1, 3, 2)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(case: Case, sizes: Sizes) -> torch.nn.Module:
    """The random model on the CPU, frozen and in eval mode, as `train_mask` leaves it."""
    shape = ModelShape("gpt_neox", case.hidden, sizes.layers or case.layers, case.heads,
                       case.intermediate, 2048)  # fmt: skip
    started = time.perf_counter()
    model = build_model(shape, sizes.logits, seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info(
        "%s: %d layers, %d parameters, %d maskable, rope %s; built in %.1f s",
        case.title, shape.num_layers, sum(p.numel() for p in model.parameters()),
        sum(w.numel() for w in maskable_parameters(model).values()),
        model.config.rope_parameters, time.perf_counter() - started,
    )  # fmt: skip
    return model


def time_steps(model, case: Case, sizes: Sizes, bigrams, tokens, device) -> dict[str, float]:
    """ms per `_step` and per whole iteration (with the count and β growth), peak memory."""
    cfg = dataclasses.replace(
        mask_config(sizes.batch, case.lam), grad_accum=case.grad_accum, max_steps=10**6
    )
    cs = ContinuousSparsification(maskable_parameters(model)).to(device)
    optimizer = score_optimizer(cs, cfg)
    target = BigramTarget(bigrams, device=device)
    batches = seeded_batches(tokens, cfg.batch_size, seed=0)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    step_ms, iter_ms, losses = [], [], []
    for i in range(sizes.warmup + sizes.steps):
        batch = next(batches)
        synchronize(device)
        started = time.perf_counter()
        xent, _ = _step(model, cs, target, optimizer, batch, cfg, device)
        synchronize(device)
        stepped = time.perf_counter()
        cs.decision_counts()
        cs.anneal(cfg.beta_growth)
        synchronize(device)
        done = time.perf_counter()
        losses.append(xent)
        if i >= sizes.warmup:
            step_ms.append(1000 * (stepped - started))
            iter_ms.append(1000 * (done - started))
        log.info("%s step %d%s: %.0f ms (%.0f with counts), xent %.4f", case.title, i + 1,
                 " (warm-up)" if i < sizes.warmup else "", 1000 * (stepped - started),
                 1000 * (done - started), xent)  # fmt: skip
    out = {
        "ms": float(np.median(step_ms)),
        "ms_p90": float(np.percentile(step_ms, 90)),
        "iter_ms": float(np.median(iter_ms)),
        "tok_s": sizes.batch * sizes.seq / (float(np.median(iter_ms)) / 1000),
        "xent_first": losses[0],
        "xent_last": losses[-1],
    }
    if device.type == "cuda":
        out["alloc_gb"] = torch.cuda.max_memory_allocated(device) / GB
        out["reserved_gb"] = torch.cuda.max_memory_reserved(device) / GB
    return out


@torch.no_grad()
def masked_loss(model, scores, bigrams, ids, device, precision) -> tuple[float, float]:
    """(target CE, penalty) of ``model`` on ``device`` with soft masks σ(``scores``), β = 1,
    computed as `_step` computes them (masked weights, `model_logits` under ``precision``, the
    target's CE outside it)."""
    weights = maskable_parameters(model)
    cs = ContinuousSparsification(weights).to(device)
    for s, value in zip(cs.scores, scores, strict=True):
        s.copy_(value)
    masked, penalty = cs.masked_weights(weights)
    ids = ids.to(device)
    with precision:
        logits = model_logits(model, ids, masked)
    loss = float(BigramTarget(bigrams, device=device).cross_entropy(logits, ids))
    return loss, penalty


def check(cpu_model, model, case: Case, bigrams, batch, device) -> dict[str, float | str]:
    """The same masked model on the CPU (fp32) and on ``device`` (bf16 autocast)."""
    generator = torch.Generator().manual_seed(1)
    scores = [
        2 * torch.randn(w.shape, generator=generator)
        for w in maskable_parameters(cpu_model).values()
    ]
    ids = batch[: case.check_rows]
    started = time.perf_counter()
    cpu_loss, cpu_penalty = masked_loss(cpu_model, scores, bigrams, ids, CPU,
                                        contextlib.nullcontext())  # fmt: skip
    cpu_seconds = time.perf_counter() - started
    if device.type == "cuda":
        precision = autocast(device)  # the library's own: bf16 on CUDA
    else:  # smoke test: the same code path (fp32 unembedding under autocast), on the CPU
        precision = torch.autocast("cpu", dtype=torch.bfloat16)
    dev_loss, dev_penalty = masked_loss(model, scores, bigrams, ids, device, precision)
    diff = abs(cpu_loss - dev_loss)
    verdict = "PASS" if diff <= TOLERANCE else "FAIL"
    log.info(
        "%s check on %s tokens: CE %.6f (CPU fp32, %.1f s) vs %.6f (%s bf16 autocast), "
        "|diff| %.2e nats, tolerance %.2g: %s; penalty %.6f vs %.6f",
        case.title, "×".join(map(str, ids.shape)), cpu_loss, cpu_seconds, dev_loss,
        device.type, diff, TOLERANCE, verdict, cpu_penalty, dev_penalty,
    )  # fmt: skip
    return {
        "cpu_loss": f"{cpu_loss:.6f}",
        "dev_loss": f"{dev_loss:.6f}",
        "loss_diff": f"{diff:.3g}",
        "check": verdict,
    }


def run_case(case: Case, sizes: Sizes, bigrams, tokens, device) -> dict[str, float | str]:
    started = time.perf_counter()
    cpu_model = build(case, sizes)
    model = copy.deepcopy(cpu_model).to(device) if device.type == "cuda" else cpu_model
    result: dict[str, float | str] = dict(time_steps(model, case, sizes, bigrams, tokens, device))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        log.info(
            "%s: peak %.2f GB allocated, %.2f GB reserved; README estimate ≈ %.0f GB (%s)",
            case.title, result["alloc_gb"], result["reserved_gb"], case.estimate_gb,
            "within" if result["reserved_gb"] <= case.estimate_gb else "over",
        )  # fmt: skip
        result["est_gb"] = case.estimate_gb
    batch = next(seeded_batches(tokens, sizes.batch, seed=0))
    result.update(check(cpu_model, model, case, bigrams, batch, device))
    log.info("%s: %.0f s in all; %s", case.title, time.perf_counter() - started, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test sizes (also BENCH_QUICK=1)"
    )
    parser.add_argument(
        "--cases",
        default=",".join(c.key for c in CASES),
        help="comma-separated subset of: " + ", ".join(c.key for c in CASES),
    )
    parser.add_argument("--steps", type=int, help="timed steps (default 50; quick 3)")
    args = parser.parse_args()
    quick = args.quick or QUICK
    sizes = SMOKE if quick else FULL
    if args.steps:
        sizes = dataclasses.replace(sizes, steps=args.steps)
    setup(threads=2 if quick else None, quick=quick)  # on a GPU machine the checks use all cores
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    if not cuda and not quick:
        log.error(
            "no CUDA device (torch %s, built with CUDA %s): the full sizes need a GPU; "
            "--quick runs a CPU smoke test", torch.__version__, torch.version.cuda,
        )  # fmt: skip
        sys.exit(2)
    device = torch.device("cuda") if cuda else CPU
    if not cuda:
        log.warning("no CUDA device: smoke test on the CPU, the GPU path is NOT exercised")
    else:
        log.info("%s, float32 matmul precision %s", torch.cuda.get_device_name(device),
                 torch.get_float32_matmul_precision())  # fmt: skip

    tokens = zipf_tokens(sizes.table_sequences * sizes.seq, sizes.tokens).reshape(-1, sizes.seq)
    bigrams = BigramModel(BigramCounts.count(tokens, sizes.tokens, threads=os.cpu_count() or 1))
    log.info("bigram table: %d tokens over V=%d, %d distinct bigrams; %.1f s", tokens.size,
             sizes.tokens, bigrams.probs.nnz, time.perf_counter() - started)  # fmt: skip

    pairs: dict[str, float | int | str] = {}
    wanted = args.cases.split(",")
    for case in CASES:
        if case.key not in wanted:
            continue
        try:
            result = run_case(case, sizes, bigrams, tokens, device)
        except torch.cuda.OutOfMemoryError as err:  # keep the other case's numbers
            log.error("%s: out of GPU memory: %s", case.title, err)
            result = {"status": "oom"}
        except Exception as err:  # the result line must still come out
            log.exception("%s failed", case.title)
            result = {"status": f"error:{type(err).__name__}"}
        for name, value in result.items():
            pairs[f"{name}_{case.key}"] = value
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    checks = [v for k, v in pairs.items() if k.startswith("check_")]
    pairs["check"] = "PASS" if checks and all(v == "PASS" for v in checks) else "FAIL"
    pairs["tolerance"] = TOLERANCE
    pairs["device"] = device.type
    pairs["gpu_path"] = int(cuda)
    pairs["quick"] = int(quick)
    pairs["steps"] = sizes.steps
    pairs["seconds"] = time.perf_counter() - started
    if not cuda:
        log.warning("CPU smoke test finished: the GPU path was NOT exercised")
    emit(pairs)
    sys.exit(0 if pairs["check"] == "PASS" else 1)


if __name__ == "__main__":
    main()
