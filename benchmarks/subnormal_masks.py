"""Cost of subnormal soft masks: one masked step late in training, with and without zeroing them.

As β grows, the soft masks σ(βs) of scores near −88/β land in fp32's subnormal range (below
1.2e-38), and so do the masked weights W ⊙ σ(βs) that every matrix product reads: x86 CPUs
handle subnormal operands in microcode. On SmolLM2-135M at λ = 1000 the step went from 4 s to
34 s over its last 20 steps (configs/smollm2.yaml, 1 thread). The training step sets soft masks
below `masking.OFF_BELOW` (1e-30) to 0; `OFF_BELOW = 0` here is the step without that.

Setup: a random Llama-layout model of SmolLM2-135M's shape with ``LAYERS`` layers (all 30 take
minutes per unzeroed step), batch 8 × 64, 2 threads, β = 372.8 (step 300 of the SmolLM2 run).
Late scores: 0.3% of the weights kept (βs = +112), ``SUBNORMAL_SHARE`` of them at βs = −88
(σ ≈ 6e-39), the rest at βs = −120 (σ = 0 exactly); fresh scores: all 0 (β = 1). The optimizer's
learning rate is 1e-9 so the scores stay put across rounds. Variants, interleaved:
  late_kept     late scores, subnormal soft masks kept (the step before the fix).
  late_zeroed   late scores, the training step as it is.
  fresh_kept, fresh_zeroed  the same at the first step: what the extra pass costs.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import QUICK, emit, interleaved, log, mask_config, median, setup, zipf_tokens
from real_model_step import VOCAB, smollm2_shape

from bigram_subnetworks import masking
from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import ContinuousSparsification
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step, score_optimizer

BATCH, SEQ, BETA = 8, 64, 372.8
LAYERS = 1 if QUICK else 4
SUBNORMAL_SHARE = 0.05
REPS = 1 if QUICK else 3
CPU = torch.device("cpu")
ZEROED_BELOW = masking.OFF_BELOW


def late_scores(cs: ContinuousSparsification, generator: torch.Generator) -> None:
    with torch.no_grad():
        cs.beta.fill_(BETA)
        for s in cs.scores:
            draw = torch.rand(s.shape, generator=generator)
            beta_s = torch.where(draw < SUBNORMAL_SHARE, -88.0, -120.0)
            s.copy_(torch.where(draw > 0.997, 112.0, beta_s) / BETA)


def main() -> None:
    setup()
    model = smollm2_shape(layers=LAYERS)
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = zipf_tokens(2_000 * SEQ, VOCAB).reshape(-1, SEQ)
    target = BigramTarget(BigramModel(BigramCounts.count(tokens, VOCAB)), device=CPU)
    ids = torch.from_numpy(tokens[:BATCH].astype(np.int64))
    cfg = mask_config(BATCH, 1000.0, 1e-9, "fp32")
    weights = maskable_parameters(model)
    fresh, late = ContinuousSparsification(weights), ContinuousSparsification(weights)
    late_scores(late, torch.Generator().manual_seed(0))
    soft = torch.cat([m.ravel() for m in late.soft().values()])
    share = float(((soft > 0) & (soft < torch.finfo(torch.float32).tiny)).double().mean())
    log.info("%d layers, %d maskable weights, %.2f%% of late soft masks subnormal",
             LAYERS, soft.numel(), 100 * share)  # fmt: skip

    def step(cs: ContinuousSparsification, zeroed_below: float):
        optimizer = score_optimizer(cs, cfg)

        def run() -> None:
            masking.OFF_BELOW = zeroed_below
            _step(model, cs, target, optimizer, ids, cfg, CPU)

        return run

    times = interleaved({
        "late_kept": step(late, 0.0), "late_zeroed": step(late, ZEROED_BELOW),
        "fresh_kept": step(fresh, 0.0), "fresh_zeroed": step(fresh, ZEROED_BELOW),
    }, REPS)  # fmt: skip
    ms = {name: 1000 * median(values) for name, values in times.items()}
    emit({"layers": LAYERS, "subnormal_share": share, **{f"{k}_ms": v for k, v in ms.items()},
          "late_kept_over_zeroed": ms["late_kept"] / ms["late_zeroed"],
          "fresh_zeroed_over_kept": ms["fresh_zeroed"] / ms["fresh_kept"]})  # fmt: skip


if __name__ == "__main__":
    main()
