"""Resume after SIGKILL: a training job killed mid-run and rerun ends bit-identical to one that
ran uninterrupted (CPU); snapshots from other settings are ignored, unreadable or malicious ones
are refused, and snapshots are removed once the job succeeds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bigram_subnetworks.resume import STATE_FILE, Resume

from conftest import VOCAB, RunsCode, make_tiny_model

# Child processes: the job as the workflow script runs it, minus Snakemake. One thread, so the
# killed-and-resumed run and the uninterrupted one do identical arithmetic.
MASK_JOB = """
import sys, numpy as np, torch
from bigram_subnetworks import io, training
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.targets import BigramTarget
torch.set_num_threads(1)
model_dir, tokens_path, resume_dir, out = sys.argv[1:5]
tokens = np.load(tokens_path)
cfg = training.MaskTrainingConfig(
    lam=1.0, learning_rate=0.05, weight_decay=0.01, beta_growth=1.02, max_steps=120,
    batch_size=8, grad_accum=2, early_stop_fraction=0.0, attempts=2, spike_window=5,
    spike_absolute=0.0, spike_relative=0.5, spike_recovery_steps=5, log_every=10, seed=3,
)  # spike_relative 0.5: every attempt counts as unstable, so both attempts run
target = BigramTarget(BigramModel(BigramCounts.count(tokens, int(sys.argv[5]))))
resume = training.resume_for(resume_dir, 5, cfg)
result = training.fit_mask(io.load_model(model_dir), target, tokens, cfg, "1", resume=resume)
result.mask.save(out + "/mask.safetensors")
result.history.drop(columns="ms_per_step").to_csv(out + "/history.tsv", sep="\\t", index=False)
"""

PRETRAIN_JOB = """
import sys, numpy as np, torch
from bigram_subnetworks import pretrain
from bigram_subnetworks.tokenizer import train_bpe
torch.set_num_threads(1)
tokens_path, resume_dir, out = sys.argv[1:4]
tokens = np.load(tokens_path)
tok = train_bpe(["a tiny corpus for a tiny tokenizer"] * 4, vocab_size=300)
shape = pretrain.ModelShape("gpt2", hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=64, max_positions=16)
cfg = pretrain.PretrainConfig(
    steps=150, batch_size=8, learning_rate=1e-2, warmup_steps=4, weight_decay=0.01,
    eval_every=10, eval_sequences=16, checkpoint_steps=(0, 7, 150), seed=0, log_every=20,
)
resume = pretrain.resume_for(resume_dir, 5, shape, cfg, len(tok))
history = pretrain.pretrain_to_directory(shape, cfg, tokens, tokens[:16], tok, out + "/ckpt",
                                         resume=resume)
history.drop(columns="ms_per_step").to_csv(out + "/history.tsv", sep="\\t", index=False)
"""


def _run(script: str, args: list[str], kill_when=None) -> bool:
    """Run a child; with ``kill_when``, SIGKILL it as soon as that returns True. Returns whether
    it was killed (False: it finished first, which makes the test fail)."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while kill_when is not None and child.poll() is None:
        if kill_when():
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            return True
        time.sleep(0.005)
    _, err = child.communicate(timeout=600)
    assert child.returncode == 0, err.decode()[-3000:]
    return False


def _snapshot(resume_dir: Path) -> dict | None:
    try:
        return torch.load(resume_dir / STATE_FILE, weights_only=True)["state"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return None  # not written yet (the rename is atomic, so never half-read)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_mask_training_killed_twice_resumes_bit_identical(tmp_path):
    model_dir, tokens_path = tmp_path / "model", tmp_path / "tokens.npy"
    make_tiny_model("gpt_neox").save_pretrained(model_dir)
    np.save(tokens_path, np.random.default_rng(0).integers(0, VOCAB, size=(64, 16)))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for out in (reference, resumed):
        out.mkdir()
    args = [str(model_dir), str(tokens_path)]
    _run(MASK_JOB, [*args, str(tmp_path / "unused"), str(reference), str(VOCAB)])

    snapshots = tmp_path / "snapshots"
    job = [*args, str(snapshots), str(resumed), str(VOCAB)]
    # First kill in attempt 0, the second after attempt 0 was finished and kept in the snapshot.
    for attempt in (0, 1):
        killed = _run(
            MASK_JOB,
            job,
            kill_when=lambda a=attempt: (_snapshot(snapshots) or {}).get("attempt") == a,
        )
        assert killed, f"the job finished before a snapshot of attempt {attempt}"
        state = _snapshot(snapshots)
        assert state["attempt"] == attempt and 0 < state["current"]["step"] < 120
        assert len(state["tried"]) == attempt
    _run(MASK_JOB, job)

    assert _digest(resumed) == _digest(reference)
    history = pd.read_csv(resumed / "history.tsv", sep="\t")
    assert sorted(history["attempt"].unique()) == [0, 1]
    assert not snapshots.exists()  # removed once the mask is trained


def test_pretraining_killed_resumes_bit_identical(tmp_path):
    tokens_path = tmp_path / "tokens.npy"
    np.save(tokens_path, np.random.default_rng(1).integers(0, 256, size=(96, 16)))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for out in (reference, resumed):
        out.mkdir()
    _run(PRETRAIN_JOB, [str(tokens_path), str(tmp_path / "unused"), str(reference)])

    snapshots = tmp_path / "snapshots"
    job = [str(tokens_path), str(snapshots), str(resumed)]
    # Killed after the step-7 checkpoint was written, so the rerun must keep it.
    killed = _run(
        PRETRAIN_JOB, job, kill_when=lambda: (_snapshot(snapshots) or {}).get("step", 0) >= 10
    )
    assert killed, "pretraining finished before its step-10 snapshot"
    assert (snapshots / "checkpoints" / "step7").is_dir()
    assert not (resumed / "ckpt").exists()  # checkpoints appear only when the run is complete
    _run(PRETRAIN_JOB, job)

    assert _digest(resumed) == _digest(reference)
    assert sorted(p.name for p in (resumed / "ckpt").iterdir()) == ["step0", "step150", "step7"]
    assert not snapshots.exists()


def test_snapshot_from_other_settings_is_ignored(tmp_path):
    Resume(tmp_path, 5, {"lam": 1.0}).save({"step": 5})
    assert Resume(tmp_path, 5, {"lam": 1.0}).load() == {"step": 5}
    assert Resume(tmp_path, 5, {"lam": 10.0}).load() is None


def test_truncated_snapshot_is_an_error_naming_the_file(tmp_path):
    resume = Resume(tmp_path, 5, {})
    resume.save({"step": 5, "scores": torch.ones(1000)})
    data = resume.path.read_bytes()
    resume.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{STATE_FILE}: cannot read the resume snapshot"):
        resume.load()


def test_snapshot_that_would_run_code_is_refused(in_tmp):
    resume = Resume(in_tmp / "snap", 5, {})
    resume.directory.mkdir()
    torch.save({"fingerprint": resume.fingerprint, "state": RunsCode()}, resume.path)
    with pytest.raises(ValueError, match="cannot read the resume snapshot"):
        resume.load()
    assert not (in_tmp / "pwned").exists()


def test_interval_zero_never_snapshots_and_negative_is_refused(tmp_path):
    assert not Resume(tmp_path, 0, {}).due(10)
    with pytest.raises(ValueError, match="resume interval must be ≥ 0"):
        Resume(tmp_path, -1, {})
