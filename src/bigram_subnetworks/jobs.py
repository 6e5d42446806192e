"""What the workflow's model jobs share (docs/architecture.md): their usual inputs loaded and
checked against each other, and the provenance an analysis output carries. A script passes its
`snakemake` object (``job``: its input, params, wildcards, threads); nothing here knows a path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import corpus, io
from .bigrams import BigramCounts, BigramModel
from .gpus import hold_gpu
from .masking import Mask


@dataclass
class ModelInputs:
    """A job's model with what it is run on: the bigram table (its vocabulary bounds every
    token id), token sequences of one split and, for mask jobs, the mask; each checked to fit
    the model."""

    model: Any
    bigrams: BigramModel
    tokens: np.ndarray | None = None
    mask: Mask | None = None


def model_inputs(
    job, tokens: str | None = "tokens", max_sequences: int | None = None, mask: bool = False
) -> ModelInputs:
    """Load ``job.params.model_dir``, ``job.input.bigrams``, the token split ``job.input[tokens]``
    (its first ``max_sequences``; None: no tokens) and, with ``mask``, ``job.input.mask``;
    refuse a vocabulary that does not fit the model and a mask of another model. A job that
    asks for a GPU (`resources: gpu`) first takes a card of its own (`gpus.hold_gpu`)."""
    if job.resources.get("gpu", 0):  # one card for the job's life, before CUDA starts
        hold_gpu()
    bigrams = BigramModel(BigramCounts.load(job.input.bigrams))
    model = io.load_model(job.params.model_dir)
    io.check_vocab_fits(bigrams.vocab_size, model, source=job.input.bigrams)
    inputs = ModelInputs(model, bigrams)
    if tokens is not None:
        array = corpus.load_tokens(job.input[tokens], vocab_size=bigrams.vocab_size)
        inputs.tokens = array[:max_sequences]
    if mask:
        inputs.mask = Mask.load(job.input.mask)
        inputs.mask.check_matches(model, source=job.input.mask)
    return inputs


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def input_hashes(paths: Mapping[str, Any]) -> dict[str, Any]:
    """sha256 of every input file, by input name (a list for a named list of files); a
    directory (a model snapshot) is named by its path, its files are not hashed."""

    def one(path: str) -> str:
        return file_sha256(path) if Path(path).is_file() else f"directory {path}"

    return {
        name: [one(p) for p in value] if isinstance(value, list) else one(value)
        for name, value in paths.items()
    }


def write_provenance(job, path: str | os.PathLike, **fields: Any) -> None:
    """An analysis output's `meta.json`: the job's rule, wildcards and settings (its params but
    the code hash, which is in `code`), seeds among them, the sha256 of its inputs, the software
    versions (`io.provenance`), and ``fields``."""
    settings = {name: value for name, value in job.params.items() if name != "code"}
    io.write_json(
        io.provenance(
            rule=job.rule,
            **job.wildcards,
            settings=settings,
            code=job.params.get("code"),
            inputs=input_hashes(dict(job.input.items())),
            **fields,
        ),
        path,
    )
