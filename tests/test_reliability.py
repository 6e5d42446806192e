"""Nothing silently wrong: a NaN loss is a failed attempt, never a mask; no loader runs code
from data; bad files are errors that name the file; a writer that dies leaves nothing behind."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bigram_subnetworks import corpus, io, texts, tokenizer
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask
from bigram_subnetworks.pretrain import save_checkpoint_dir
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import MaskTrainingConfig, train_mask

from conftest import VOCAB, RunsCode, make_tiny_model

CONFIG = MaskTrainingConfig(
    lam=1.0, learning_rate=0.05, weight_decay=0.01, beta_growth=1.05, max_steps=15,
    batch_size=8, grad_accum=1, early_stop_fraction=0.01, attempts=2, spike_window=5,
    spike_absolute=10.0, spike_relative=10.0, spike_recovery_steps=2, log_every=5, seed=0,
)  # fmt: skip


class _NaNDuringFirstAttempt(BigramTarget):
    """The real bigram target, whose loss is NaN at its 4th call (step 4 of attempt 0)."""

    calls = 0

    def cross_entropy(self, logits, input_ids):
        self.calls += 1
        loss = super().cross_entropy(logits, input_ids)
        return loss * float("nan") if self.calls == 4 else loss


@pytest.fixture
def bigrams(cyclic_tokens):
    return BigramModel(BigramCounts.count(cyclic_tokens, VOCAB))


def test_injected_nan_fails_the_attempt_and_the_retry_makes_the_mask(
    cyclic_tokens, bigrams, caplog
):
    caplog.set_level(logging.INFO, logger="bigram_subnetworks.training")
    result = train_mask(make_tiny_model("gpt_neox"), _NaNDuringFirstAttempt(bigrams),
                        cyclic_tokens, CONFIG)  # fmt: skip
    first = result.history[result.history["attempt"] == 0]
    assert first["step"].max() == 4 and np.isnan(first["xent"].iloc[-1])
    assert "attempt 0: non-finite loss at step 4, stopping it" in caplog.text
    assert "attempt 0: non-finite loss, ended by non_finite after 4 steps" in caplog.text
    assert result.attempt == 1 and result.stable
    assert np.isfinite(result.history[result.history["attempt"] == 1]["loss"]).all()


def test_nan_in_every_attempt_gives_no_mask(cyclic_tokens, bigrams):
    model = make_tiny_model("gpt2")
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")  # poisons every forward
    with pytest.raises(FloatingPointError, match="all 2 attempts produced non-finite losses"):
        train_mask(model, BigramTarget(bigrams), cyclic_tokens, CONFIG)


# ---- no code from data -------------------------------------------------------------------------


def test_token_file_with_a_pickled_object_is_refused(in_tmp):
    path = in_tmp / "train.npy"
    np.save(path, np.array([RunsCode()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"train.npy is corrupt or truncated"):
        corpus.load_tokens(path)


def test_bigram_counts_with_pickled_objects_are_refused(in_tmp):
    path = in_tmp / "counts.npz"
    obj = np.array([RunsCode()], dtype=object)
    np.savez(path, data=obj, indices=obj, indptr=obj, shape=np.array([3, 2]), unigrams=obj)
    with pytest.raises(ValueError, match=r"cannot read bigram counts .*counts.npz"):
        BigramCounts.load(path)


def test_mask_file_that_is_a_pickle_is_refused(in_tmp):
    path = in_tmp / "mask.safetensors"
    path.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(ValueError, match=r"cannot read mask file .*mask.safetensors"):
        Mask.load(path)


def test_model_with_pickled_weights_is_refused(in_tmp):
    directory = in_tmp / "model"
    make_tiny_model("gpt_neox").config.save_pretrained(directory)
    torch.save({"gpt_neox.embed_in.weight": RunsCode()}, directory / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"cannot load the model in .*model"):
        io.load_model(directory)


def _with_remote_code(directory: Path, config_name: str, changes: dict) -> None:
    """Point ``config_name`` at code shipped beside it (as a hub repo with custom code does)."""
    config = json.loads((directory / config_name).read_text())
    (directory / config_name).write_text(json.dumps({**config, **changes}))
    (directory / "evil.py").write_text("import os\nos.system('touch pwned')\n")


def test_model_that_asks_for_remote_code_never_runs_it(in_tmp):
    directory = in_tmp / "model"
    make_tiny_model("gpt_neox").save_pretrained(directory)
    # A known architecture: the custom code is ignored and the built-in class loads.
    _with_remote_code(directory, "config.json", {"auto_map": {"AutoModelForCausalLM": "evil.M"}})
    assert type(io.load_model(directory)).__name__ == "GPTNeoXForCausalLM"
    # An architecture only the custom code defines: refused.
    _with_remote_code(directory, "config.json", {"model_type": "evil"})
    with pytest.raises(ValueError, match="cannot load the model in"):
        io.load_model(directory)


def test_tokenizer_that_asks_for_remote_code_never_runs_it(in_tmp, bpe_tokenizer):
    directory = in_tmp / "tok"
    tokenizer.save_tokenizer(bpe_tokenizer, directory)
    auto_map = {"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}
    _with_remote_code(directory, "tokenizer_config.json", auto_map)
    assert len(tokenizer.load_tokenizer(directory)) == len(bpe_tokenizer)
    _with_remote_code(directory, "tokenizer_config.json", {"tokenizer_class": "EvilTokenizer"})
    with pytest.raises(ValueError, match="no loadable tokenizer in"):
        tokenizer.load_tokenizer(directory)


# ---- bad files name themselves -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return tokenizer.train_bpe(texts.python_docs_documents()[:50], vocab_size=300)


def test_truncated_files_are_errors_naming_the_file(tmp_path):
    counts = tmp_path / "counts.npz"
    BigramCounts.count(np.arange(64).reshape(4, 16) % VOCAB, VOCAB).save(counts)
    counts.write_bytes(counts.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"cannot read bigram counts .*counts.npz"):
        BigramCounts.load(counts)
    mask = tmp_path / "mask.safetensors"
    Mask({"w": torch.ones(64, 64, dtype=torch.bool)}).save(mask)
    mask.write_bytes(mask.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cannot read mask file .*mask.safetensors"):
        Mask.load(mask)
    model = tmp_path / "model"
    save_checkpoint_dir(make_tiny_model("gpt2"), model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cannot load the model in .*model"):
        io.load_model(model)


def test_non_utf8_text_is_an_error_naming_the_file(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("a fine document\n")
    bad.write_bytes(b"caf\xe9 latin-1, not UTF-8\n")
    with pytest.raises(ValueError, match=r"bad.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        list(texts.local_documents([good, bad]))


def test_tokenizer_that_does_not_match_the_model_is_named(tmp_path, bpe_tokenizer):
    model = make_tiny_model("gpt_neox", vocab_size=128)
    with pytest.raises(ValueError, match=r"tok: a vocabulary of 300 tokens does not fit"):
        io.check_vocab_fits(len(bpe_tokenizer), model, source=tmp_path / "tok")
    io.check_vocab_fits(128, model, source=tmp_path / "tok")


# ---- a writer that dies leaves nothing -------------------------------------------------------


class _Killed(Exception):
    pass


def _writers(tmp_path, bpe_tokenizer):
    table, ones = pd.DataFrame({"a": [1, 2]}), np.ones((2, 4), dtype=np.int64)
    mask = Mask({"w": torch.ones(2, dtype=torch.bool)})
    return {
        "json": (tmp_path / "meta.json", lambda p: io.write_json({"a": 1}, p)),
        "table": (tmp_path / "t.tsv", lambda p: io.write_table(table, p)),
        "tokens": (tmp_path / "train.npy", lambda p: corpus.save_tokens(np.ones((2, 2)), p)),
        "counts": (tmp_path / "c.npz", lambda p: BigramCounts.count(ones, 4).save(p)),
        "mask": (tmp_path / "m.safetensors", lambda p: mask.save(p)),
        "model": (tmp_path / "step0", lambda p: save_checkpoint_dir(make_tiny_model("gpt2"), p)),
        "tokenizer": (tmp_path / "tok", lambda p: tokenizer.save_tokenizer(bpe_tokenizer, p)),
    }  # fmt: skip


@pytest.mark.parametrize(
    "kind", ["json", "table", "tokens", "counts", "mask", "model", "tokenizer"]
)
def test_a_writer_killed_mid_write_leaves_no_output(tmp_path, bpe_tokenizer, monkeypatch, kind):
    """Every artifact writer writes under a temporary name; die after the bytes are written but
    before the rename, and neither the output nor the temporary is left."""
    path, write = _writers(tmp_path, bpe_tokenizer)[kind]

    def die(src, dst):
        assert Path(src).exists()  # the bytes were written, under another name
        raise _Killed

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(_Killed):
        write(path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == []
    write(path)
    assert path.exists()
