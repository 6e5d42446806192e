"""Mask-training schedules on a real model: does a CPU schedule converge, and what does it cost?

One trial trains one bigram (or optimal) subnetwork of a model the workflow has already placed
(e.g. SmolLM2-135M: `snakemake resources/models/smollm2-135m/main results/bigrams/smollm2/counts.npz
--configfile configs/smollm2.yaml`) with the schedule given on the command line, then evaluates
it on the eval split, and appends one row to ``--out`` (TSV): the settings, how training ended
(`training.ENDINGS`, the final undecided share), the stability verdict, size, bigram r and
wall time, with the host. The step-by-step history goes beside it (``<out stem>-<name>.tsv``).
docs/schedule-trials.md (linked from docs/method.md §4) records every trial run for
configs/smollm2.yaml.

    python benchmarks/schedule_trials.py --name lr1e-3-g1.02 --lam 100 \\
        --learning-rate 1e-3 --beta-growth 1.02 --max-steps 600 --batch-size 8
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from _common import host

from bigram_subnetworks import corpus, evaluation, io, targets, training
from bigram_subnetworks.bigrams import BigramCounts, BigramModel

log = logging.getLogger("trials")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-dir", default="resources/models/smollm2-135m/main")
    parser.add_argument("--tokens", default="results/tokens/smollm2")
    parser.add_argument("--bigrams", default="results/bigrams/smollm2/counts.npz")
    parser.add_argument("--target", default="bigram", choices=["bigram", "optimal"])
    parser.add_argument("--lam", type=float, required=True)
    parser.add_argument("--learning-rate", type=float, required=True)
    parser.add_argument("--beta-growth", type=float, required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beta-growth-late", type=float, default=None)
    parser.add_argument("--late-undecided", type=float, default=0.2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-sequences", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/schedule_trials/trials.tsv")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    bigrams = BigramModel(BigramCounts.load(args.bigrams))
    tokens = corpus.load_tokens(f"{args.tokens}/mask_train.npy", vocab_size=bigrams.vocab_size)
    held_out = corpus.load_tokens(f"{args.tokens}/eval.npy", vocab_size=bigrams.vocab_size)
    model = io.load_model(args.model_dir)
    config = training.MaskTrainingConfig(
        lam=args.lam, learning_rate=args.learning_rate, beta_growth=args.beta_growth,
        max_steps=args.max_steps, batch_size=args.batch_size, attempts=1, log_every=10,
        seed=args.seed, precision=args.precision,
        beta_growth_late=args.beta_growth_late, late_undecided=args.late_undecided,
    )  # fmt: skip
    target = targets.make_target(args.target, model, bigrams, config.precision)
    started = time.perf_counter()
    result = training.train_mask(model, target, tokens, config, device="cpu")
    minutes = (time.perf_counter() - started) / 60
    metrics = evaluation.evaluate_mask(
        model, result.mask, held_out[: args.eval_sequences], bigrams, batch_size=16
    )
    history = result.history
    tail = history["xent"].iloc[-50:]
    row = {
        "name": args.name, "target": args.target, "lam": args.lam,
        "learning_rate": args.learning_rate,
        "beta_growth_late": args.beta_growth_late, "late_undecided": args.late_undecided,
        "beta_growth": args.beta_growth, "max_steps": args.max_steps,
        "batch_size": args.batch_size, "precision": args.precision, "seed": args.seed,
        **result.summary(), "kept_fraction": result.mask.density,
        "r_drop_inf": metrics["r_drop_inf"], "r_clip_inf": metrics["r_clip_inf"],
        "xent_bigram": metrics["xent_bigram"], "final_xent_mean50": tail.mean(),
        "final_xent_std50": tail.std(), "train_minutes": minutes,
        "eval_sequences": min(args.eval_sequences, len(held_out)), **host(),
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    history.to_csv(out.with_name(f"{out.stem}-{args.name}.tsv"), sep="\t", index=False)
    # Earlier trials may have other columns (settings added since): one table of them all.
    earlier = [pd.read_csv(out, sep="\t")] if out.exists() else []
    pd.concat([*earlier, pd.DataFrame([row])], ignore_index=True).to_csv(out, sep="\t", index=False)
    log.info("trial %s: %s", args.name, row)


if __name__ == "__main__":
    main()
