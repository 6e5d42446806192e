"""Token arrays: documents tokenized into fixed-length sequences (docs/method.md §1).

Tokenization cuts one stream of documents, each ended by the tokenizer's end-of-text token (and
opened by its BOS where the family is trained so), into 128-token rows with no padding, after a
document-level train/eval split; the arrays are saved and memory-mapped as `.npy`. The documents
come from `texts`; no bigram counting here (see `bigrams`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path

log = logging.getLogger(__name__)

_TOKENIZE_BATCH_DOCUMENTS = 1024  # bounds the Python-list memory of batch tokenization


# The end-of-text tokens of the model families, most common first (docs/method.md §1): GPT-2,
# Pythia, SmolLM2, Qwen, OLMo, Phi; Llama 3; Llama 2, Mistral, OPT; Gemma. A chat model's
# eos_token may end a turn instead (SmolLM2-Instruct and Qwen <|im_end|>, Llama 3 <|eot_id|>).
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


@dataclass(frozen=True)
class DocumentBoundaries:
    """How documents are marked in a token stream: the separator that ends every document and
    the BOS that opens it (None: none), with the reason for each (docs/method.md §1)."""

    separator: str
    separator_id: int
    separator_reason: str
    bos: str | None
    bos_id: int | None
    bos_reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _special_tokens(tokenizer: Any) -> set[str]:
    """The tokenizer's added and special tokens: a family's end-of-text token is one, while the
    same string in the ordinary vocabulary would be text (e.g. "</s>" learnt from HTML)."""
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    return set(added) | set(getattr(tokenizer, "all_special_tokens", ()))


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself opens a text with its BOS (Llama, Gemma; not GPT-2, Pythia,
    SmolLM2): the sign that its family was trained with one at every document start."""
    if tokenizer.bos_token_id is None:
        return False
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return special[:1] == [tokenizer.bos_token_id] and plain[:1] != [tokenizer.bos_token_id]


def document_boundaries(tokenizer: Any) -> DocumentBoundaries:
    """The separator and BOS of a tokenizer's documents (docs/method.md §1).

    The separator is the eos_token when it is an end-of-text token (`END_OF_TEXT_TOKENS`), else
    the first of those among the tokenizer's special tokens (SmolLM2-Instruct's eos_token is
    the chat end-of-turn <|im_end|>; its pretraining separated documents with <|endoftext|>),
    else the eos_token (logged). BOS is prepended when the tokenizer adds one itself."""
    eos = tokenizer.eos_token
    special = _special_tokens(tokenizer)
    if eos is not None and eos in END_OF_TEXT_TOKENS:
        separator, why = eos, f"the eos_token {eos!r} is an end-of-text token"
    elif found := next((token for token in END_OF_TEXT_TOKENS if token in special), None):
        separator = found
        why = (
            f"the eos_token {eos!r} is not an end-of-text token (a chat model's ends a turn); "
            f"{found!r}, the tokenizer's end-of-text token, is"
        )
    elif eos is not None:
        separator = eos
        why = (
            f"none of the end-of-text tokens {', '.join(END_OF_TEXT_TOKENS)} is a special token "
            f"of this tokenizer: its eos_token {eos!r} is used"
        )
        log.warning("documents are separated by %r: %s", separator, why)
    else:
        raise ValueError(
            "tokenizer has no eos_token and none of the end-of-text tokens "
            f"{', '.join(END_OF_TEXT_TOKENS)}: documents cannot be separated"
        )
    separator_id = tokenizer.convert_tokens_to_ids(separator)
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if not _adds_bos(tokenizer):
        bos, bos_id = None, None
        bos_why = "the tokenizer adds no BOS of its own (add_special_tokens=True): none prepended"
    elif bos_id == separator_id:
        bos, bos_id = None, None
        bos_why = "the tokenizer's BOS is the separator, which already precedes every document"
    else:
        bos_why = (
            f"the tokenizer opens every text with its BOS {bos!r}: prepended to every document"
        )
    return DocumentBoundaries(separator, separator_id, why, bos, bos_id, bos_why)


def _token_stream(
    tokenizer: Any, documents: Sequence[str], dtype: np.dtype, boundaries: DocumentBoundaries
) -> np.ndarray:
    """Token ids of all documents, each opened by BOS (if any) and ended by the separator, as
    one 1-D array."""
    end = np.array([boundaries.separator_id], dtype=dtype)
    start = None if boundaries.bos_id is None else np.array([boundaries.bos_id], dtype=dtype)
    pieces: list[np.ndarray] = []
    for first in range(0, len(documents), _TOKENIZE_BATCH_DOCUMENTS):
        batch = list(documents[first : first + _TOKENIZE_BATCH_DOCUMENTS])
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            if start is not None:
                pieces.append(start)
            pieces.append(np.asarray(ids, dtype=dtype))
            pieces.append(end)
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=dtype)


def sequences_from_texts(tokenizer: Any, texts: Sequence[str], seq_len: int) -> np.ndarray:
    """Texts as one stream (each ended by the tokenizer's end-of-text token and opened by its BOS
    where it adds one: `document_boundaries`) cut into ``[n, seq_len]`` sequences, the tail
    dropped: what the pipeline does to each split (docs/method.md §1).
    Texts too short for one sequence are an error that says how many tokens they gave."""
    boundaries = document_boundaries(tokenizer)
    texts = [text for text in texts if text.strip()]
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 2**16 else np.uint32)
    stream = _token_stream(tokenizer, texts, dtype, boundaries)
    n_rows = len(stream) // seq_len
    if n_rows == 0:
        raise ValueError(
            f"{len(texts)} texts give {len(stream)} tokens, fewer than one sequence of {seq_len}: "
            "give more text or a shorter seq_len"
        )
    return stream[: n_rows * seq_len].reshape(n_rows, seq_len)


def tokenize_documents(
    tokenizer: Any,
    documents: Sequence[str],
    seq_len: int,
    eval_fraction: float,
    seed: int,
    boundaries: DocumentBoundaries | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split documents into train/eval, tokenize, and cut each split into `[n, seq_len]` rows.

    The split is by document (seeded shuffle; eval gets ceil(eval_fraction * n_docs), at least one),
    so no text is in both. Each document is ended by the end-of-text token and opened by BOS
    where the tokenizer adds one (``boundaries``, by default `document_boundaries`); the stream
    is cut without padding and the tail shorter than `seq_len` is dropped (docs/method.md §1).

    Returns:
        (train, eval): uint16 arrays if the vocabulary fits in 16 bits, else uint32. # [n, seq_len]
    """
    boundaries = boundaries or document_boundaries(tokenizer)
    log.info(
        "documents end with %r (id %d): %s; BOS %r: %s",
        boundaries.separator,
        boundaries.separator_id,
        boundaries.separator_reason,
        boundaries.bos,
        boundaries.bos_reason,
    )
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n_docs = len(documents)
    if n_docs < 2:
        raise ValueError(f"need at least 2 documents for a train/eval split, got {n_docs}")
    n_eval = min(max(1, math.ceil(eval_fraction * n_docs)), n_docs - 1)
    order = np.random.default_rng(seed).permutation(n_docs)
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 2**16 else np.uint32)

    splits = {}
    for split, indices in (("train", order[n_eval:]), ("eval", order[:n_eval])):
        stream = _token_stream(tokenizer, [documents[i] for i in indices], dtype, boundaries)
        n_rows = len(stream) // seq_len
        if n_rows == 0:
            raise ValueError(
                f"{split} split has {len(stream)} tokens, fewer than seq_len={seq_len}: "
                "no full sequence; use a larger corpus or a shorter seq_len"
            )
        splits[split] = stream[: n_rows * seq_len].reshape(n_rows, seq_len)
        log.info(
            "%s: %d documents, %d tokens -> %d sequences of %d (%d tail tokens dropped)",
            split,
            len(indices),
            len(stream),
            n_rows,
            seq_len,
            len(stream) - n_rows * seq_len,
        )
    return splits["train"], splits["eval"]


def split_training(
    train: np.ndarray,
    mask_sequences: int | None,
    lens_sequences: int,
    bigram_sequences: int | None = None,
) -> dict[str, np.ndarray]:
    """The training split's three uses, as the authors' files (docs/method.md §1, §10):

    - ``bigrams``: the first ``bigram_sequences`` sequences (None: every one), what the bigram
      table is counted on (their `fortrain` file, larger than the mask-training subset);
    - ``lens_fit``: the last ``lens_sequences`` of those, the residual-stream maps' fit set
      (their separate `tail1k` file), never shown to mask training;
    - ``mask_train``: the first ``mask_sequences`` of the rest (None: all of it), what masks are
      trained on (their `500k` subset).

    The sequences are contiguous chunks of a document-shuffled stream, so prefixes are samples.
    """
    bigrams = train[:bigram_sequences]
    available = len(bigrams) - lens_sequences
    if available < 1:
        raise ValueError(
            f"{len(bigrams)} training sequences leave none for mask training after the "
            f"{lens_sequences} held out for the residual-stream fit: lower "
            "residual_stream.fit_sequences, or use a larger corpus"
        )
    if mask_sequences is not None and mask_sequences > available:
        log.warning(
            "corpus.train_sequences %d: only %d training sequences are not held out for the "
            "residual-stream fit; mask training uses those",
            mask_sequences,
            available,
        )
    return {
        "bigrams": bigrams,
        "lens_fit": bigrams[available:],
        "mask_train": bigrams[: min(available, mask_sequences or available)],
    }


def save_tokens(array: np.ndarray, path: str | os.PathLike) -> None:
    """Save a token array as `.npy`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_tokens(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a token array, checking it is a non-empty 2-D integer array with ids < vocab_size.

    Returns:
        read-only memory map. # [n_sequences, seq_len]
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"token file {path} does not exist")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"token file {path} is corrupt or truncated: {error}") from error
    if not isinstance(array, np.ndarray):
        raise ValueError(f"token file {path} is not a single .npy array")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"token file {path} holds a {array.ndim}-D {array.dtype} array, "
            "expected 2-D integers [n_sequences, seq_len]"
        )
    if array.size == 0:
        raise ValueError(f"token file {path} holds no tokens (shape {array.shape})")
    if vocab_size is not None:
        max_id, min_id = int(array.max()), int(array.min())
        if max_id >= vocab_size or min_id < 0:
            raise ValueError(
                f"token file {path} has token ids in [{min_id}, {max_id}] but vocab size is "
                f"{vocab_size}: tokens and tokenizer/model do not match"
            )
    return array
