"""Cost of subnormal soft masks: one masked step late in training, kept vs flushed to zero.

As β grows, the soft masks σ(βs) of scores near −88/β land in fp32's subnormal range (below
1.2e-38), and so do the masked weights W ⊙ σ(βs) that every matrix product reads. x86 CPUs
handle subnormal operands in microcode: on SmolLM2-135M at λ = 1000 the step went from 4 s to
34 s over its last 20 steps (configs/smollm2.yaml, 1 thread). `runtime.flush_denormals`, which
training runs under, treats them as zero.

Setup: a random Llama-layout model of SmolLM2-135M's shape with ``LAYERS`` layers (all 30 take
minutes per unflushed step), batch 8 × 64, 2 threads, β = 372.8 (step 300 of the SmolLM2 run).
Scores: 0.3% of the weights kept (βs = +112), ``SUBNORMAL_SHARE`` of them at βs = −88 (σ ≈ 6e-39,
subnormal), the rest at βs = −120 (σ = 0 exactly). The optimizer's learning rate is 1e-9 so the
scores, and the share, stay put across rounds. Variants, interleaved:
  kept     PyTorch's default: subnormal values are computed as such.
  flushed  the same step under `flush_denormals()` (what `train_attempt` does).
"""

from __future__ import annotations

import numpy as np
import torch
from _common import QUICK, emit, interleaved, log, mask_config, median, setup, zipf_tokens
from real_model_step import VOCAB, smollm2_shape

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import ContinuousSparsification
from bigram_subnetworks.runtime import flush_denormals
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step, score_optimizer

BATCH, SEQ, BETA = 8, 64, 372.8
LAYERS = 1 if QUICK else 4
SUBNORMAL_SHARE = 0.05
REPS = 1 if QUICK else 3
CPU = torch.device("cpu")


def late_scores(cs: ContinuousSparsification, generator: torch.Generator) -> None:
    with torch.no_grad():
        cs.beta.fill_(BETA)
        for s in cs.scores:
            draw = torch.rand(s.shape, generator=generator)
            beta_s = torch.where(draw < SUBNORMAL_SHARE, -88.0, -120.0)
            s.copy_(torch.where(draw > 0.997, 112.0, beta_s) / BETA)


def main() -> None:
    setup()
    if not torch.set_flush_denormal(True):
        raise SystemExit("this CPU cannot flush subnormal floats: nothing to compare")
    torch.set_flush_denormal(False)
    model = smollm2_shape(layers=LAYERS)
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = zipf_tokens(2_000 * SEQ, VOCAB).reshape(-1, SEQ)
    target = BigramTarget(BigramModel(BigramCounts.count(tokens, VOCAB)), device=CPU)
    ids = torch.from_numpy(tokens[:BATCH].astype(np.int64))
    cs = ContinuousSparsification(maskable_parameters(model))
    late_scores(cs, torch.Generator().manual_seed(0))
    cfg = mask_config(BATCH, 1000.0, 1e-9, "fp32")
    optimizer = score_optimizer(cs, cfg)
    soft = torch.cat([m.ravel() for m in cs.soft().values()])
    share = float(((soft > 0) & (soft < torch.finfo(torch.float32).tiny)).double().mean())
    log.info("%d layers, %d maskable weights, %.2f%% of soft masks subnormal",
             LAYERS, soft.numel(), 100 * share)  # fmt: skip

    def kept() -> None:
        _step(model, cs, target, optimizer, ids, cfg, CPU)

    def flushed() -> None:
        with flush_denormals():
            _step(model, cs, target, optimizer, ids, cfg, CPU)

    times = interleaved({"kept": kept, "flushed": flushed}, REPS)
    kept_ms, flushed_ms = 1000 * median(times["kept"]), 1000 * median(times["flushed"])
    emit({"layers": LAYERS, "subnormal_share": share, "kept_ms": kept_ms,
          "flushed_ms": flushed_ms, "kept_over_flushed": kept_ms / flushed_ms})  # fmt: skip


if __name__ == "__main__":
    main()
