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
