"""Cost of evaluating one mask relative to a plain forward pass over the same tokens.

`evaluation.evaluate_mask` (masked weights substituted once, surprisal of every next token, CE
against the sparse bigram rows, bigram surprisal, Pearson r clip-inf and drop-inf) with a random
~10% mask, vs
a plain `torch.no_grad()` forward of the same model over the same eval sequences and batch size.
Model: the random tiny GPT-NeoX of mask_step.py at V = 4,096; bigram counts from a 2M-token
synthetic Zipf stream, eval sequences from a disjoint draw. CPU, 2 threads, interleaved rounds.
Why: evaluation runs once per mask and should cost little more than the forward pass it needs.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import QUICK, emit, interleaved, log, median, setup, tiny_neox, zipf_tokens

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.evaluation import evaluate_mask
from bigram_subnetworks.masking import Mask

VOCAB, SEQ, BATCH = 4096, 128, 16
N_EVAL = 48 if QUICK else 400
N_TRAIN = 1_600 if QUICK else 16_000
REPS = 2 if QUICK else 5


def random_mask(model, density: float, seed: int = 0) -> Mask:
    generator = torch.Generator().manual_seed(seed)
    return Mask(
        {
            name: torch.rand(w.shape, generator=generator) < density
            for name, w in maskable_parameters(model).items()
        }
    )


@torch.no_grad()
def plain_forward(model, tokens: np.ndarray) -> None:
    for start in range(0, len(tokens), BATCH):
        ids = torch.from_numpy(np.asarray(tokens[start : start + BATCH], np.int64))
        model(input_ids=ids)


def main() -> None:
    setup()
    train = zipf_tokens(N_TRAIN * SEQ, VOCAB, seed=0).reshape(-1, SEQ)
    tokens = zipf_tokens(N_EVAL * SEQ, VOCAB, seed=1).reshape(-1, SEQ)
    bigrams = BigramModel(BigramCounts.count(train, VOCAB))
    model = tiny_neox(VOCAB).eval()
    mask = random_mask(model, 0.1)
    log.info("eval %s, mask keeps %.3f of %d weights", tokens.shape, mask.density, mask.n_total)
    metrics = {}

    def evaluate() -> None:
        metrics.update(evaluate_mask(model, mask, tokens, bigrams, BATCH))

    times = interleaved(
        {"forward": lambda: plain_forward(model, tokens), "evaluate": evaluate}, reps=REPS
    )
    log.info("metrics: %s", {k: round(float(v), 4) for k, v in metrics.items()})
    forward, evaluation = median(times["forward"]), median(times["evaluate"])
    emit(
        {
            "forward_s": forward,
            "evaluate_s": evaluation,
            "tokens": tokens.size,
            "over_forward": evaluation / forward,
        }
    )


if __name__ == "__main__":
    main()
