"""Bigram counting throughput and peak memory: ours vs the reference loop, Counter and a floor.

Data: 50M synthetic Zipf tokens over V = 50,304 as [n, 128] uint32 sequences, and the embedded
default corpus (Python docs, byte-level BPE 4096, seq 128). Variants, timed interleaved:
  ours     `BigramCounts.count(threads=2)` (sorted pair codes per chunk -> CSR), whole array.
  loop     the reference `NGramModel` counting loop (np.roll window, tuple keys,
           defaultdict(Counter)), on a 1M-token prefix.
  counter  `collections.Counter` over (context, next) pairs, on the same prefix.
  floor    one plain NumPy pass over the whole array, `tokens.sum()` (the memory-bandwidth
           floor: reading every token once).
  bincount `np.bincount` over the whole array: a one-pass histogram of single tokens, for scale.
Peak memory of ours at 50M tokens is the max RSS of a child process that memory-maps a .npy
(as the pipeline does) and counts it. Why: DESIGN "Bigram counting is vectorized and streams".
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from _common import QUICK, THREADS, emit, interleaved, log, median, setup, zipf_tokens

from bigram_subnetworks.bigrams import BigramCounts

SEQ, VOCAB = 128, 50304
N_TOKENS = 2_000_000 if QUICK else 50_000_000
PREFIX = 100_000 if QUICK else 1_000_000
REPS = 2 if QUICK else 3

CHILD = """
import sys, numpy as np
from bigram_subnetworks.bigrams import BigramCounts
tokens = np.load(sys.argv[1], mmap_mode="r")
if sys.argv[2] == "count":
    counts = BigramCounts.count(tokens, int(sys.argv[3]), threads=int(sys.argv[4]))
else:
    int(np.asarray(tokens).sum())
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))  # peak RSS of this process image, KB
"""


def reference_loop(sequences: np.ndarray, vocab_size: int) -> dict:
    """The reference's pure-Python count: one np.roll'd 2-token window per token."""
    ngrams = defaultdict(Counter)
    for sequence in sequences.tolist():
        curr = np.ones(2, dtype=int) * vocab_size
        for token_id in sequence:
            curr = np.roll(curr, -1)
            curr[-1] = token_id
            ngrams[tuple(curr[:-1])][curr[-1]] += 1
    return ngrams


def counter_pairs(sequences: np.ndarray, vocab_size: int) -> Counter:
    contexts = np.empty(sequences.shape, dtype=np.int64)
    contexts[:, 0] = vocab_size
    contexts[:, 1:] = sequences[:, :-1]
    return Counter(zip(contexts.ravel().tolist(), sequences.ravel().tolist(), strict=True))


def peak_rss_mb(path: Path, mode: str) -> float:
    """Peak RSS (MB) of a fresh child that maps ``path`` and counts it (or only reads it).

    The child reports its own VmHWM: getrusage(RUSAGE_CHILDREN).ru_maxrss would also include
    this (torch-importing) parent's RSS, inherited at fork/vfork time before exec.
    """
    args = [sys.executable, "-c", CHILD, str(path), mode, str(VOCAB), str(THREADS)]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024


def rates(tokens: np.ndarray, vocab: int, prefix: int, reps: int) -> dict[str, float]:
    """Tokens per second of every variant on one token array."""
    head = tokens[: max(1, prefix // tokens.shape[1])]
    times = interleaved(
        {
            "ours": lambda: BigramCounts.count(tokens, vocab, threads=THREADS),
            "loop": lambda: reference_loop(head, vocab),
            "counter": lambda: counter_pairs(head, vocab),
            "floor": lambda: tokens.sum(),
            "bincount": lambda: np.bincount(tokens.ravel(), minlength=vocab),
        },
        reps=reps,
        warmup=0,
    )
    sizes = {name: tokens.size for name in times} | {"loop": head.size, "counter": head.size}
    out = {name: sizes[name] / median(values) for name, values in times.items()}
    log.info("tokens/s: %s", {k: f"{v:,.0f}" for k, v in out.items()})
    return out


def corpus_tokens() -> np.ndarray:
    from bigram_subnetworks.corpus import tokenize_documents
    from bigram_subnetworks.texts import python_docs_documents
    from bigram_subnetworks.tokenizer import train_bpe

    documents = python_docs_documents()
    tokenizer = train_bpe(documents, 4096)
    train, _ = tokenize_documents(tokenizer, documents, SEQ, eval_fraction=0.1, seed=0)
    return train


def main() -> None:
    setup()
    synthetic = zipf_tokens(N_TOKENS, VOCAB).reshape(-1, SEQ)
    log.info("synthetic: %s %s, %d distinct bigrams", synthetic.shape, synthetic.dtype,
             BigramCounts.count(synthetic, VOCAB, threads=THREADS).pairs.nnz)  # fmt: skip
    big = rates(synthetic, VOCAB, PREFIX, REPS)
    corpus = corpus_tokens()
    log.info("default corpus: %s %s", corpus.shape, corpus.dtype)
    small = rates(corpus, 4096, PREFIX, REPS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.npy"
        np.save(path, synthetic)
        read_mb = peak_rss_mb(path, "read")
        peak_mb = peak_rss_mb(path, "count")
    log.info("child max RSS: %.0f MB reading the tokens, %.0f MB counting them", read_mb, peak_mb)
    emit(
        {
            "ours_mtok_s": big["ours"] / 1e6,
            "loop_ktok_s": big["loop"] / 1e3,
            "counter_mtok_s": big["counter"] / 1e6,
            "floor_mtok_s": big["floor"] / 1e6,
            "bincount_mtok_s": big["bincount"] / 1e6,
            "corpus_speedup_vs_loop": small["ours"] / small["loop"],
            "corpus_speedup_vs_counter": small["ours"] / small["counter"],
            "read_only_mb": read_mb,
            "speedup_vs_loop": big["ours"] / big["loop"],
            "speedup_vs_counter": big["ours"] / big["counter"],
            "over_floor": big["floor"] / big["ours"],
            "peak_mb": peak_mb,
        }
    )


if __name__ == "__main__":
    main()
