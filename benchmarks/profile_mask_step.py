"""Where one masked training step spends its CPU time, at Pythia's vocabulary (50,304).

Same setup as mask_step.py "ours": random tiny GPT-NeoX (hidden 256, 4 layers, ff 1024), batch
16 x 128, bigram rows from a 2M-token synthetic Zipf stream, CPU, 2 threads. Two warm-up steps,
then `torch.profiler` over one `training._step` call. Prints the top 15 ops by self CPU time;
the last line names the top op and its share of the step's total self CPU time.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import QUICK, emit, log, mask_config, setup, tiny_neox, zipf_tokens
from torch.profiler import ProfilerActivity, profile

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import ContinuousSparsification
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step, score_optimizer

VOCAB, SEQ, BATCH = 50304, 128, 16
N_SEQUENCES = 1_600 if QUICK else 16_000
CPU = torch.device("cpu")


def main() -> None:
    setup()
    tokens = zipf_tokens(N_SEQUENCES * SEQ, VOCAB).reshape(-1, SEQ)
    bigrams = BigramModel(BigramCounts.count(tokens, VOCAB))
    target = BigramTarget(bigrams, device=CPU)
    batch = tokens[:BATCH].astype(np.int64)
    ids = torch.from_numpy(batch)
    model = tiny_neox(VOCAB).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cs = ContinuousSparsification(maskable_parameters(model))
    cfg = mask_config(BATCH)
    optimizer = score_optimizer(cs, cfg)
    lengths = np.diff(bigrams.probs.indptr)
    distinct = np.unique(batch)
    log.info(
        "batch: %d positions (%d target entries), %d distinct contexts (%d target entries)",
        batch.size, lengths[batch.ravel()].sum(), distinct.size, lengths[distinct].sum(),
    )  # fmt: skip
    for _ in range(2):
        _step(model, cs, target, optimizer, ids, cfg, CPU)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(model, cs, target, optimizer, ids, cfg, CPU)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    total = sum(e.self_cpu_time_total for e in events)
    top = max(events, key=lambda e: e.self_cpu_time_total)
    log.info("profiled step: %.0f ms self CPU in total", total / 1000)
    emit(
        {"total_ms": total / 1000, "top_op": top.key, "top_share": top.self_cpu_time_total / total}
    )


if __name__ == "__main__":
    main()
