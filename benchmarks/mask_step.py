"""Cost of one mask-training step: plain fine-tuning vs ours vs the paper's NeuroSurgeon approach.

Tiny random GPT-NeoX (hidden 256, 4 layers, 4 heads, ff 1024), batch 16 x 128, CPU, 2 threads, at
vocab 4,096 and 50,304 (Pythia's logit count). Bigram counts come from a synthetic Zipf stream of
2M tokens; every variant trains on the same batch.
  plain  all weights trainable, AdamW, CE on the next tokens.
  ours   `training._step` (soft masks, `masked_forward`, sparse `BigramTarget`, AdamW on the scores)
         plus `decision_counts`, the early-stop count `train_attempt` runs after every step.
  ref    the paper's loop (see _reference.py): NeuroSurgeon 0.1.0 `CircuitModel`, a dense float64
         [batch, seq, V] target built on the CPU, soft-target CE + λ·Σσ/|M|, AdamW, undecided
         count, temperature ×1.001.
Also timed alone: the early-stop count, our target's CE (forward only) and the reference's dense
target fill (faithful, and a lean variant without its nan bookkeeping).
Why: DESIGN "a masked step costs close to a plain fine-tuning step" and "no dense targets".
"""

from __future__ import annotations

import copy
import gc

import numpy as np
import torch
from _common import (
    QUICK,
    emit,
    interleaved,
    log,
    mask_config,
    median,
    plain_step,
    setup,
    tiny_neox,
    zipf_tokens,
)
from _reference import ReferenceNGram, circuit_model, reference_step

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import ContinuousSparsification
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step, score_optimizer

BATCH, SEQ, LAM, LR = 16, 128, 10.0, 5e-5
N_SEQUENCES = 1_600 if QUICK else 16_000  # 0.2M or 2.05M tokens
REPS = {4096: 2 if QUICK else 15, 50304: 2 if QUICK else 8}
CPU = torch.device("cpu")


def measure(vocab: int) -> dict[str, float]:
    """Median seconds per step of plain / ours / ref, and of the parts, at one vocabulary."""
    tokens = zipf_tokens(N_SEQUENCES * SEQ, vocab).reshape(-1, SEQ)
    bigrams = BigramModel(BigramCounts.count(tokens, vocab))
    batch = tokens[:BATCH].astype(np.int64)
    ids = torch.from_numpy(batch)
    lengths = np.diff(bigrams.probs.indptr)
    distinct = np.unique(batch)
    log.info(
        "V=%d: %d positions (%d bigram-row entries), %d distinct contexts (%d entries)",
        vocab, batch.size, lengths[batch.ravel()].sum(), distinct.size, lengths[distinct].sum(),
    )  # fmt: skip

    base = tiny_neox(vocab).eval()
    plain = copy.deepcopy(base).train()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=LR)
    circuit = circuit_model(copy.deepcopy(base), maskable_parameters(base))
    ref_opt = torch.optim.AdamW(circuit.parameters(), lr=LR)
    for p in base.parameters():
        p.requires_grad_(False)
    cs = ContinuousSparsification(maskable_parameters(base))
    cfg, target = mask_config(BATCH, LAM, LR), BigramTarget(bigrams, device=CPU)
    ours_opt = score_optimizer(cs, cfg)
    assert circuit.n_trainable == cs.numel, (circuit.n_trainable, cs.numel)
    log.info("V=%d: %d mask logits; building the reference rows", vocab, cs.numel)
    ngram = ReferenceNGram(bigrams)

    def ours_step() -> None:
        _step(base, cs, target, ours_opt, ids, cfg, CPU)
        cs.decision_counts()
        cs.anneal(cfg.beta_growth)

    times = interleaved(
        {
            "plain": lambda: plain_step(plain, plain_opt, ids),
            "ours": ours_step,
            "ref": lambda: reference_step(circuit, ref_opt, batch, ngram, LAM),
        },
        reps=REPS[vocab],
    )
    with torch.no_grad():
        logits = base(input_ids=ids).logits
    input_ids = torch.Tensor(batch).int()
    times.update(
        interleaved(
            {
                "count": cs.decision_counts,
                "ours_target": lambda: target.cross_entropy(logits, ids),
                "ref_target": lambda: ngram.predict(input_ids),
                "lean_target": lambda: ngram.predict_lean(batch),
            },
            reps=5,
        )
    )
    result = {name: median(values) for name, values in times.items()}
    log.info("V=%d medians (ms): %s", vocab, {k: round(1000 * v, 1) for k, v in result.items()})
    return result


def main() -> None:
    setup()
    small = measure(4096)
    gc.collect()
    large = measure(50304)
    pairs: dict[str, float] = {}
    for vocab, res in ((4096, small), (50304, large)):
        for name, seconds in res.items():
            pairs[f"{name}_ms_v{vocab}"] = 1000 * seconds
        pairs[f"masked_over_plain_v{vocab}"] = res["ours"] / res["plain"]
    pairs["masked_over_plain"] = small["ours"] / small["plain"]
    pairs["speedup_v4096"] = small["ref"] / small["ours"]
    pairs["speedup_v50304"] = large["ref"] / large["ours"]
    emit(pairs)


if __name__ == "__main__":
    main()
