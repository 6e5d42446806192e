"""tokenizer: byte-level BPE for the models pretrained in the pipeline, and tokenizer loading.

GPT-2/Pythia style (byte-level, no prefix space, "<|endoftext|>" as EOS/BOS/UNK) so the default's
tiny models see text the way the paper's models do (docs/method.md §1). Hub tokenizers are
loaded from local directories only; downloading is the download rule's job.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .atomic import atomic_path

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
_N_BYTES = 256


def train_bpe(documents: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most `vocab_size` tokens (256 bytes + EOS + merges).

    Deterministic for the same documents and vocab size.
    """
    if vocab_size <= _N_BYTES:
        raise ValueError(f"vocab_size must exceed {_N_BYTES} (the byte alphabet), got {vocab_size}")
    if not any(doc.strip() for doc in documents):
        raise ValueError("cannot train a tokenizer on an empty corpus")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    start = time.perf_counter()
    bpe.train_from_iterator(documents, trainer=trainer, length=len(documents))
    log.info(
        "trained byte-level BPE: %d tokens (requested %d) on %d documents in %.1f s",
        bpe.get_vocab_size(),
        vocab_size,
        len(documents),
        time.perf_counter() - start,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike) -> None:
    """Save in the Hugging Face layout, so `AutoTokenizer` and models' `save_pretrained` agree;
    written atomically (a killed job leaves no partial directory)."""
    with atomic_path(directory) as tmp:
        tokenizer.save_pretrained(str(tmp))


def load_tokenizer(directory: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a `save_pretrained` directory (ours or a downloaded model's); never the hub."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
    try:
        return AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"no loadable tokenizer in {directory}: {error}") from error
