"""What `configs/rehearsal.yaml` runs on: the paper's models at their exact shapes, with random
weights, written as local "hub" directories, so the paper run's grid can be rehearsed offline
on a CPU (docs/scale.md, "A rehearsal at real shapes").

- Tokenizers with the paper's vocabularies: a byte-level BPE learned on Python's documentation
  (the default corpus, no download), filled up with placeholder tokens to exactly Pythia's
  50,277 and GPT-2's 50,257 tokens. The text they give is not Pythia's or GPT-2's; the shapes
  (a 50,277-token tokenizer against a 50,304-row padded embedding) are.
- Models with the exact configurations of Pythia-70M and Pythia-160M (GPT-NeoX, untied, rotary
  on a quarter of each head, parallel residual, padded vocabulary 50,304) and GPT-2 small
  (tied, Conv1D), each at several revisions (`{directory}/{model}/{revision}`: the layout a
  local hub source is read from; `hub.snapshot_model`), in fp16 as Pythia's hub weights are.
  Every revision has its own random weights (seeded), so dynamics across revisions run.
- Released masks in the authors' pickle format (`interop.export_released`) for the models and
  λ the config compares (`{directory}/released/{model}/subnetwork_dict_lambda1e1.pickle`).

    python -m bigram_subnetworks.rehearsal resources/rehearsal
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from .architectures import maskable_parameters
from .interop import export_released
from .masking import Mask
from .texts import python_docs_documents
from .tokenizer import load_tokenizer, save_tokenizer, train_bpe

log = logging.getLogger(__name__)

PYTHIA = {"rotary_pct": 0.25, "use_parallel_residual": True, "tie_word_embeddings": False,
          "max_position_embeddings": 2048, "vocab_size": 50_304, "bos_token_id": 0,
          "eos_token_id": 0}  # fmt: skip
MODELS = {
    "pythia-70m": ("gpt_neox", {**PYTHIA, "hidden_size": 512, "num_hidden_layers": 6,
                                "num_attention_heads": 8, "intermediate_size": 2048}),
    "pythia-160m": ("gpt_neox", {**PYTHIA, "hidden_size": 768, "num_hidden_layers": 12,
                                 "num_attention_heads": 12, "intermediate_size": 3072}),
    "gpt2-small": ("gpt2", {"vocab_size": 50_257, "n_positions": 1024, "n_embd": 768,
                            "n_layer": 12, "n_head": 12, "bos_token_id": 50_256,
                            "eos_token_id": 50_256}),
}  # fmt: skip
TOKENIZERS = {"pythia": 50_277, "gpt2": 50_257}  # the hub tokenizers' len()
TOKENIZER_OF = {"pythia-70m": "pythia", "pythia-160m": "pythia", "gpt2-small": "gpt2"}
REVISIONS = {"pythia-70m": ["step0", "step1000", "main"],
             "pythia-160m": ["step0", "step1000", "main"], "gpt2-small": ["main"]}  # fmt: skip
RELEASED = {"pythia-160m": "subnetwork_dict_lambda1e1.pickle"}  # λ = 10, the authors' name
# Tokens of the tokenizers learned from the text; the rest up to the paper's sizes are
# placeholders. A full 50k-merge BPE of the small corpus takes minutes and changes no shape.
LEARNED_TOKENS = 8192


def make_tokenizer(size: int, documents: list[str], learned: int = LEARNED_TOKENS):
    """A byte-level BPE of exactly ``size`` tokens: ``learned`` of them learned from the text
    (as far as it allows), the rest placeholder tokens."""
    tokenizer = train_bpe(documents, min(size, learned))
    missing = size - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([f"<|placeholder_{i}|>" for i in range(missing)])
    if len(tokenizer) != size:
        raise RuntimeError(f"tokenizer of {len(tokenizer)} tokens, wanted {size}")
    return tokenizer


def make_model(name: str, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    family, settings = MODELS[name]
    torch.manual_seed(seed)
    if family == "gpt_neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(**settings))
    return GPT2LMHeadModel(GPT2Config(**settings))


def write_rehearsal(
    directory: str | Path, models: list[str] | None = None, final_only: bool = False
) -> None:
    """Tokenizers, models at every revision (``final_only``: the last) and released masks under
    ``directory`` (of ``models``, default all of `MODELS`); what exists already is kept (delete
    the directory to rebuild)."""
    directory = Path(directory)
    models = list(MODELS) if models is None else models
    documents = None
    tokenizers = {}
    for name in {TOKENIZER_OF[model] for model in models}:
        size = TOKENIZERS[name]
        path = directory / "tokenizers" / name
        if not (path / "tokenizer.json").is_file():
            documents = documents if documents is not None else python_docs_documents()
            log.info("tokenizer %s: a BPE of %d tokens", name, size)
            save_tokenizer(make_tokenizer(size, documents), path)
        tokenizers[name] = path
    for model_index, (name, revisions) in enumerate(REVISIONS.items()):
        if name not in models:
            continue
        for revision_index, revision in enumerate(revisions):
            path = directory / name / revision
            if (path / "config.json").is_file() or (final_only and revision != revisions[-1]):
                continue
            model = make_model(name, seed=100 * model_index + revision_index)
            log.info("%s@%s: %d parameters -> %s", name, revision, model.num_parameters(), path)
            model.half().save_pretrained(path)
            # Beside the weights, as a hub repository has it (`save_tokenizer` would replace
            # the directory).
            load_tokenizer(tokenizers[TOKENIZER_OF[name]]).save_pretrained(path)
    for name, filename in RELEASED.items():
        path = directory / "released" / name / filename
        if path.is_file() or name not in models:
            continue
        model = make_model(name, seed=0)
        weights = {n: w.shape for n, w in maskable_parameters(model).items()}
        generator = torch.Generator().manual_seed(1)
        mask = Mask({n: torch.rand(s, generator=generator) < 0.05 for n, s in weights.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        export_released(mask, path, str(directory / name / REVISIONS[name][-1]), model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", default="resources/rehearsal")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    write_rehearsal(parser.parse_args().directory)


if __name__ == "__main__":
    main()
