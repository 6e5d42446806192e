"""Route a job's logging, warnings and uncaught tracebacks to its Snakemake log file."""

from __future__ import annotations

import logging
import sys


def setup(path: str, level: int = logging.INFO) -> None:
    """Send logging, warnings and stderr (tracebacks included) to ``path``, line-buffered."""
    handle = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives for the job
    sys.stderr = handle
    logging.basicConfig(
        stream=handle,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)


def start(job, threads: bool = True) -> None:
    """What every workflow script does first: its logging to the job's log file (`setup`) and,
    for a job that runs a model, torch's intra-op threads set to the rule's ``threads``, so jobs
    side by side do not oversubscribe the cores."""
    setup(job.log[0])
    if threads:
        import torch

        torch.set_num_threads(job.threads)
