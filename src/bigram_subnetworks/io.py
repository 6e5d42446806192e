"""Loading models and writing artifacts with provenance.

Every artifact is written under a temporary name and renamed into place, so a killed job never
leaves a complete-looking file. Models load from local directories only (`local_files_only`); the
hub is reached only by the download rule.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .atomic import atomic_path


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read JSON file {path}: {err}") from err


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Tidy TSV, written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


# λ labels ("1", "0.1", "match-1", "full") are names, never numbers.
LABEL_COLUMNS = {"lam": str, "bigram_lam": str, "optimal_lam": str}


def read_table(path: str | os.PathLike, **options: Any) -> pd.DataFrame:
    """A tidy TSV as written by `write_table`, its λ-label columns as text (``options``: more
    `pandas.read_csv` options)."""
    return pd.read_csv(path, sep="\t", dtype=LABEL_COLUMNS, **options)


def load_model(directory: str | os.PathLike, device: str | None = None):
    """A causal LM saved with `save_pretrained`, in eval mode; never runs code from the hub."""
    from pickle import UnpicklingError

    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"no model at {directory}: expected a save_pretrained directory with config.json"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, dtype=torch.float32
        )
    except (OSError, ValueError, RuntimeError, KeyError, UnpicklingError, SafetensorError) as error:
        # weights_only unpickling, truncated safetensors, remote code asked for: all refused.
        raise ValueError(f"cannot load the model in {directory}: {error}") from error
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def check_vocab_fits(vocab_size: int, model, source: str | os.PathLike) -> None:
    """Token ids from a tokenizer (or bigram table) larger than the model's embedding would index
    out of range: refuse them, naming where they came from. A larger embedding is fine (Pythia
    pads 50,277 tokens to 50,304 rows)."""
    n_rows = model.get_input_embeddings().num_embeddings
    if vocab_size > n_rows:
        raise ValueError(
            f"{source}: a vocabulary of {vocab_size} tokens does not fit the model's embedding "
            f"of {n_rows} rows: tokenizer and model do not match"
        )


def _git_describe() -> str | None:
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def provenance(**fields: Any) -> dict[str, Any]:
    """The `meta.json` common to every artifact: what made it, with which software, when."""
    import numpy
    import torch
    import transformers

    return {
        **fields,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bigram_subnetworks": __version__,
        "git": _git_describe(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
