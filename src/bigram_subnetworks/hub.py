"""Snapshots of hub models and tokenizers into the pipeline's results, for offline compute jobs.

Only the download rules (localrules: they run on the head node, where the network is) call this
module; every compute job then loads the snapshot directory with `local_files_only`. The hub's own
cache (`HF_HOME`/`HF_HUB_CACHE`) is used as usual, so a machine that already has a model needs no
network, and `HF_HUB_OFFLINE=1` is honoured. A source may also be a local directory (a model of
your own): either one `save_pretrained` directory or a directory of revision subdirectories.
"""

from __future__ import annotations

import logging
import os
import shutil
from fnmatch import fnmatch
from pathlib import Path

from .atomic import atomic_path

log = logging.getLogger(__name__)

# Configs, tokenizer files (json/txt vocabularies, sentencepiece models) and weights; never code
# (no *.py: models load with trust_remote_code=False) and no other frameworks' weights.
METADATA_PATTERNS = ("*.json", "*.txt", "*.model")
SAFETENSORS_PATTERNS = ("*.safetensors",)
# Older revisions (e.g. early Pythia branches) may only have PyTorch pickles; transformers loads
# them with torch.load(weights_only=True), which cannot run code.
PICKLE_PATTERNS = ("pytorch_model*.bin",)
TOKENIZER_PATTERNS = (
    "tokenizer*.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "*.model",
    "added_tokens.json",
)
DOWNLOAD_HINT = (
    "run the download rules where the network is reachable: `HF_HUB_OFFLINE=0 snakemake "
    "--cores 1 downloads` (with the same --configfile), or go online"
)


class HubUnavailableError(RuntimeError):
    """A hub model or tokenizer is neither in the local cache nor reachable."""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _weight_patterns(repo_id: str, revision: str) -> tuple[str, ...]:
    """Safetensors when the revision has them, else the PyTorch weights; offline both (only
    what the cache holds is used)."""
    if _offline():
        return SAFETENSORS_PATTERNS + PICKLE_PATTERNS
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo_id, revision=revision)
    if any(fnmatch(name, SAFETENSORS_PATTERNS[0]) for name in files):
        return SAFETENSORS_PATTERNS
    return PICKLE_PATTERNS


def _local_source(source: str, revision: str) -> Path | None:
    root = Path(source)
    if not root.is_dir():
        return None
    return root / revision if (root / revision).is_dir() else root


def _hub_snapshot(repo_id: str, revision: str, patterns: tuple[str, ...], what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns)))
    except LocalEntryNotFoundError as error:
        state = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
        raise HubUnavailableError(
            f"{what} {repo_id!r} at revision {revision!r} is not in the local Hugging Face cache "
            f"and {state}: {DOWNLOAD_HINT} ({error})"
        ) from error


def _copy_matching(source: Path, destination: Path, patterns: tuple[str, ...]) -> list[str]:
    """Copy the files of `source` (top level) whose names match; hard links where possible (the
    hub cache holds multi-GB blobs on the same file system)."""
    destination.mkdir(parents=True)
    copied = []
    for path in sorted(source.iterdir()):
        if not path.is_file() or not any(fnmatch(path.name, p) for p in patterns):
            continue
        real = path.resolve()
        try:
            os.link(real, destination / path.name)
        except OSError:
            shutil.copy2(real, destination / path.name)
        copied.append(path.name)
    return copied


def snapshot_model(source: str, revision: str, directory: str | os.PathLike) -> list[str]:
    """Write model + tokenizer of `source` (hub id or local directory) at `revision` into
    `directory`, atomically; returns the file names. Raises `HubUnavailableError` offline when
    the cache lacks them, and `ValueError` when the snapshot has no config or weights."""
    local = _local_source(source, revision)
    if local is not None:
        patterns = METADATA_PATTERNS + SAFETENSORS_PATTERNS + PICKLE_PATTERNS
        snapshot = local
    else:
        patterns = METADATA_PATTERNS + _weight_patterns(source, revision)
        snapshot = _hub_snapshot(source, revision, patterns, "model")
    with atomic_path(directory) as tmp:
        files = _copy_matching(snapshot, tmp, patterns)
        weights = [f for f in files if f.endswith((".safetensors", ".bin"))]
        if "config.json" not in files or not weights:
            raise ValueError(
                f"{source} at revision {revision!r} ({snapshot}) has no loadable model: "
                f"expected config.json and weights, found {files or 'nothing'}"
            )
    log.info("model %s@%s -> %s: %s", source, revision, directory, ", ".join(files))
    return files


def snapshot_tokenizer(source: str, revision: str, directory: str | os.PathLike) -> list[str]:
    """Write the tokenizer files of `source` at `revision` into `directory`, atomically, and
    check that they load."""
    from .tokenizer import load_tokenizer

    local = _local_source(source, revision)
    snapshot = local or _hub_snapshot(source, revision, TOKENIZER_PATTERNS, "tokenizer")
    with atomic_path(directory) as tmp:
        files = _copy_matching(snapshot, tmp, TOKENIZER_PATTERNS)
        if not files:
            raise ValueError(f"{source} at revision {revision!r} ({snapshot}) has no tokenizer")
        tokenizer = load_tokenizer(tmp)
    log.info("tokenizer %s@%s -> %s: %d tokens", source, revision, directory, len(tokenizer))
    return files
