"""The public API: one call finds a subnetwork of a Hugging Face model from texts, evaluates,
saves and loads it; bad input is named."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch

import bigram_subnetworks
from bigram_subnetworks import (
    Mask,
    MaskTrainingConfig,
    Subnetwork,
    apply_mask,
    evaluate_subnetwork,
    find_bigram_subnetwork,
    find_optimal_subnetwork,
)
from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.interop import masked_copy
from bigram_subnetworks.texts import python_docs_documents
from bigram_subnetworks.tokenizer import train_bpe

from conftest import make_tiny_model

FAST = {"learning_rate": 0.1, "beta_growth": 1.05, "max_steps": 30, "batch_size": 8}


@pytest.fixture(scope="module")
def texts_and_tokenizer():
    documents = python_docs_documents()[:200]
    return documents, train_bpe(documents, vocab_size=300)


def test_the_package_exports_the_api_lazily():
    assert bigram_subnetworks.find_bigram_subnetwork is find_bigram_subnetwork
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bigram_subnetworks.nothing  # noqa: B018


def test_paper_defaults_are_the_defaults():
    """One place for the paper's values: the config defaults (configs/paper.yaml is checked
    against them in test_config)."""
    cfg = MaskTrainingConfig(lam=10)
    assert (cfg.learning_rate, cfg.beta_growth, cfg.max_steps, cfg.batch_size) == (
        5e-5, 1.001, 15_000, 32,
    )  # fmt: skip
    assert (cfg.weight_decay, cfg.attempts, cfg.spike_recovery_steps) == (0.01, 3, 100)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_one_call_finds_evaluates_saves_and_loads_a_subnetwork(arch, texts_and_tokenizer, tmp_path):
    texts, tokenizer = texts_and_tokenizer
    model = make_tiny_model(arch, vocab_size=len(tokenizer))
    rows = []
    found = find_bigram_subnetwork(
        model, tokenizer, texts[:150], lam=1, seq_len=32, on_step=rows.append, **FAST
    )
    assert isinstance(found, Subnetwork) and found.target == "bigram"
    assert set(found.mask.tensors) == set(maskable_parameters(model))
    assert 0 < found.mask.density < 1 and len(found.history) == len(rows) == found.steps
    assert found.bigrams.vocab_size == len(tokenizer)
    metrics = evaluate_subnetwork(model, found.mask, tokenizer, texts[150:], found.bigrams,
                                  seq_len=32)  # fmt: skip
    assert -1 <= metrics["r_drop_inf"] <= 1 and metrics["n_kept"] == found.mask.n_kept
    found.save(tmp_path / "sub")
    loaded = Subnetwork.load(tmp_path / "sub")
    assert loaded.mask.equals(found.mask) and loaded.config == found.config
    assert (loaded.ended, loaded.converged) == (found.ended, found.converged)
    assert loaded.undecided_fraction == found.undecided_fraction
    assert loaded.history["xent"].tolist() == pytest.approx(found.history["xent"].tolist())
    assert loaded.bigrams.counts.pairs.nnz == found.bigrams.counts.pairs.nnz
    ids = torch.arange(20).unsqueeze(0)
    with apply_mask(model, loaded.mask), torch.no_grad():
        masked = model(input_ids=ids).logits
    with torch.no_grad():
        assert not torch.equal(masked, model(input_ids=ids).logits)


def test_optimal_subnetwork_from_token_arrays(texts_and_tokenizer):
    _, tokenizer = texts_and_tokenizer
    model = make_tiny_model("gpt2", vocab_size=len(tokenizer))
    tokens = np.random.default_rng(0).integers(0, len(tokenizer), size=(64, 16))
    found = find_optimal_subnetwork(model, tokens=tokens, lam=0.5, **FAST)
    assert found.target == "optimal" and found.bigrams is None and found.steps > 0


def test_settings_override_the_paper_defaults(texts_and_tokenizer):
    texts, tokenizer = texts_and_tokenizer
    found = find_bigram_subnetwork(
        make_tiny_model("gpt2", vocab_size=len(tokenizer)), tokenizer, texts[:100], seq_len=32,
        **{**FAST, "max_steps": 3, "attempts": 1},
    )  # fmt: skip
    assert found.config == dataclasses.replace(
        MaskTrainingConfig(lam=10.0), **{**FAST, "max_steps": 3, "attempts": 1}
    )


def test_bad_input_is_named(texts_and_tokenizer):
    texts, tokenizer = texts_and_tokenizer
    from transformers import BloomConfig, BloomForCausalLM

    bloom = BloomForCausalLM(BloomConfig(vocab_size=32, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match=r"unsupported architecture 'bloom'.*supported"):
        find_bigram_subnetwork(bloom, tokenizer, texts)
    model = make_tiny_model("gpt2", vocab_size=len(tokenizer))
    with pytest.raises(ValueError, match="fewer than one sequence of 128"):
        find_bigram_subnetwork(model, tokenizer, ["a few words"])
    with pytest.raises(ValueError, match="fewer than one batch"):
        find_bigram_subnetwork(model, tokenizer, [texts[0][:150]], seq_len=32, **FAST)
    with pytest.raises(ValueError, match="does not fit"):
        find_bigram_subnetwork(make_tiny_model("gpt2", vocab_size=64), tokenizer, texts, seq_len=32)
    found = find_bigram_subnetwork(model, tokenizer, texts[:100], seq_len=32,
                                   **{**FAST, "max_steps": 2})  # fmt: skip
    with pytest.raises(TypeError, match="arguments are out of order"):
        evaluate_subnetwork(model, found.mask, texts, found.bigrams)
    with pytest.raises(ValueError, match="longer than GPT2LMHeadModel's 64 positions"):
        find_bigram_subnetwork(model, tokenizer, texts, seq_len=128, **FAST)
    with pytest.raises(ValueError, match="seq_len must be an integer ≥ 2"):
        find_bigram_subnetwork(model, tokenizer, texts, seq_len=0, **FAST)
    with pytest.raises(ValueError, match="lam must be a number ≥ 0"):
        find_bigram_subnetwork(model, tokenizer, texts, lam=-1, seq_len=32, **FAST)
    other = make_tiny_model("gpt_neox", vocab_size=len(tokenizer))
    with pytest.raises(ValueError, match="is not in the model"):
        evaluate_subnetwork(other, found.mask, tokenizer, texts, found.bigrams, seq_len=32)


def test_a_bigram_target_follows_the_model_to_its_device(texts_and_tokenizer):
    """A target built on the CPU for a model trained elsewhere moves with it (checked with the
    meta device, which needs no GPU)."""
    from bigram_subnetworks.bigrams import BigramCounts, BigramModel
    from bigram_subnetworks.targets import BigramTarget

    tokens = np.random.default_rng(0).integers(0, 50, size=(16, 8))
    target = BigramTarget(BigramModel(BigramCounts.count(tokens, 50)))
    moved = target.to("meta")
    assert moved.values.device.type == "meta" and moved.row_ptr.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoints_work_and_come_back_unchanged(arch, dtype, texts_and_tokenizer):
    """transformers loads a checkpoint in its saved dtype (SmolLM2 bf16, Pythia fp16): finding,
    evaluating and applying a mask work on it, and the caller's model comes back as it went in:
    dtype, device, mode, requires_grad, every weight bit-identical."""
    texts, tokenizer = texts_and_tokenizer
    model = make_tiny_model(arch, vocab_size=len(tokenizer)).to(dtype).train()
    model.get_input_embeddings().weight.requires_grad_(False)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    found = find_bigram_subnetwork(model, tokenizer, texts[:150], lam=1, seq_len=32, **FAST)
    optimal = find_optimal_subnetwork(model, tokenizer, texts[:150], lam=1, seq_len=32, **FAST)
    metrics = evaluate_subnetwork(
        model, found.mask, tokenizer, texts[150:], found.bigrams, seq_len=32
    )
    assert math.isfinite(metrics["r_drop_inf"]) and 0 < optimal.mask.density < 1
    assert model.training and {n: p.requires_grad for n, p in model.named_parameters()} == grads
    after = model.state_dict()
    assert all(after[n].dtype == t.dtype and torch.equal(after[n], t) for n, t in before.items())
    fp32 = make_tiny_model(arch, vocab_size=len(tokenizer)).to(dtype).float()
    same = evaluate_subnetwork(fp32, found.mask, tokenizer, texts[150:], found.bigrams, seq_len=32)
    assert same["r_drop_inf"] == pytest.approx(metrics["r_drop_inf"], abs=1e-6)
    with apply_mask(model, found.mask):
        assert model.get_input_embeddings().weight.dtype == dtype
    assert all(torch.equal(after[n], t) for n, t in before.items())
    copy = masked_copy(model, found.mask)
    assert next(copy.parameters()).dtype == dtype


PROGRESS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_tiny_model
from bigram_subnetworks import find_bigram_subnetwork
from bigram_subnetworks.texts import python_docs_documents
from bigram_subnetworks.tokenizer import train_bpe
texts = python_docs_documents()[:150]
tokenizer = train_bpe(texts, vocab_size=300)
model = make_tiny_model("gpt2", vocab_size=len(tokenizer))
find_bigram_subnetwork(model, tokenizer, texts, lam=1, seq_len=32, progress={progress},
                       learning_rate=0.1, beta_growth=1.05, max_steps=4, batch_size=8, log_every=2)
"""


@pytest.mark.parametrize("progress", [None, False])
def test_a_script_shows_progress_without_configuring_logging(progress, tmp_path):
    """`python x.py > log` with no logging set up: by default the steps are printed (to
    stderr, no bar since no person watches), with what happens before the first step;
    progress=False shows no progress."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "x.py"
    tests = str(Path(__file__).parent)
    script.write_text(PROGRESS_SCRIPT.format(tests=tests, progress=progress))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    if progress is None:
        assert "tokenizing 150 texts into sequences of 32 tokens" in run.stderr
        assert "counting bigrams over" in run.stderr
        assert "attempt 0 step 2/4" in run.stderr and "step 4/4" in run.stderr
        assert "\r" not in run.stderr  # no bar in a log file
    else:  # warnings still show (logging's last resort), as the unconverged mask's here
        assert "attempt 0 step" not in run.stderr and "tokenizing" not in run.stderr
        assert "the mask did not converge" in run.stderr


def test_a_save_is_whole_or_nothing_and_says_what_it_belongs_to(texts_and_tokenizer, tmp_path):
    texts, tokenizer = texts_and_tokenizer
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    found = find_bigram_subnetwork(model, tokenizer, texts[:100], seq_len=32, **FAST)
    provenance = found.provenance
    assert provenance["vocab_size"] == len(tokenizer) and len(provenance["weights"]) == 16
    target = tmp_path / "sub"
    found.save(target)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        found.save(target)
    # An optimal subnetwork saved over it: no stale bigram table is left beside it.
    optimal = find_optimal_subnetwork(model, tokenizer, texts[:100], seq_len=32, **FAST)
    optimal.save(target, overwrite=True)
    assert not (target / "bigrams.npz").exists() and Subnetwork.load(target).bigrams is None
    # A save that fails half-way leaves the previous one whole and no staging directory.
    broken = dataclasses.replace(found, history=None)
    with pytest.raises(AttributeError):
        broken.save(target, overwrite=True)
    assert Subnetwork.load(target).target == "optimal"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    meta = json.loads((target / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["provenance"] == optimal.provenance


def test_a_subnetwork_warns_on_another_checkpoint_of_the_same_shape(texts_and_tokenizer):
    texts, tokenizer = texts_and_tokenizer
    model = make_tiny_model("gpt2", vocab_size=len(tokenizer))
    found = find_bigram_subnetwork(model, tokenizer, texts[:100], seq_len=32, **FAST)
    held_out = texts[100:130]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_subnetwork(model, found, tokenizer, held_out, seq_len=32)  # its own: silent
        half = model.to(torch.bfloat16)  # the same weights rounded: another fingerprint
    other = make_tiny_model("gpt2", vocab_size=len(tokenizer), seed=1)
    with pytest.warns(UserWarning, match="trained on other weights"):
        evaluate_subnetwork(other, found, tokenizer, held_out, seq_len=32)
    with pytest.raises(ValueError, match="trained on other weights"):
        evaluate_subnetwork(half, found, tokenizer, held_out, seq_len=32, strict=True)
    with pytest.warns(UserWarning, match="trained on other weights"), found.apply(other):
        pass
    with (
        pytest.raises(ValueError, match="trained on other weights"),
        found.apply(other, strict=True),
    ):
        pass


def test_the_version_is_written_once_and_the_package_is_typed():
    """pyproject.toml reads `__version__` (dynamic); CITATION.cff states the same release."""
    import importlib.metadata
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert importlib.metadata.version("bigram-subnetworks") == bigram_subnetworks.__version__
    assert f"version: {bigram_subnetworks.__version__}\n" in (root / "CITATION.cff").read_text()
    assert (Path(bigram_subnetworks.__file__).parent / "py.typed").is_file()


def test_a_lambda_sweep_gives_the_r_vs_size_table_with_the_full_model_first(texts_and_tokenizer):
    from bigram_subnetworks import kept_by_block, sweep_lambdas

    texts, tokenizer = texts_and_tokenizer
    model = make_tiny_model("gpt_neox", vocab_size=len(tokenizer))
    table = sweep_lambdas(model, tokenizer, texts[:150], texts[150:180], lams=(0.1, 100.0),
                          seq_len=32, **FAST)  # fmt: skip
    assert table["lam"].tolist() == [-np.inf, 0.1, 100.0]
    assert table["kept_fraction"].iloc[0] == 1.0
    assert table["n_kept"].iloc[2] < table["n_kept"].iloc[1] < table["n_kept"].iloc[0]
    assert table["r_drop_inf"].between(-1, 1).all() and "converged" in table
    blocks = kept_by_block(model, Mask.full({n: w.shape for n, w in
                                             maskable_parameters(model).items()}))  # fmt: skip
    assert (blocks["kept_fraction"] == 1).all()
