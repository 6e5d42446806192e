"""The README's Python example runs as written, on a tiny Llama-layout model saved locally in
place of the hub model (saved in bf16, as SmolLM2's weights are) and with a short schedule in
place of the paper's."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from bigram_subnetworks import Subnetwork
from bigram_subnetworks.texts import python_docs_documents
from bigram_subnetworks.tokenizer import train_bpe

from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
# What the test changes in the example: each must occur in it exactly once.
HUB_MODEL = 'model_id = "HuggingFaceTB/SmolLM2-135M"'
SCHEDULE = "learning_rate=5e-3, beta_growth=1.01, max_steps=700"
SHORT_SCHEDULE = "learning_rate=0.1, beta_growth=1.05, max_steps=20"


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Use the library")[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    documents = python_docs_documents()[:400]
    tokenizer = train_bpe(documents, vocab_size=300)
    model_dir = tmp_path / "tiny-llama"
    # A bf16 checkpoint, as SmolLM2's published weights: transformers loads it in bf16.
    model = make_tiny_model("llama", vocab_size=len(tokenizer)).to(torch.bfloat16)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "corpus.txt").write_text("\n\n".join(documents))
    example = readme_example()
    for original in (HUB_MODEL, SCHEDULE):
        assert example.count(original) == 1, f"the README example no longer has {original!r}"
    example = example.replace(HUB_MODEL, f"model_id = {str(model_dir)!r}")
    example = example.replace(SCHEDULE, SHORT_SCHEDULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    kept = re.search(r"kept ([\d,]+) of ([\d,]+) weights", printed)
    assert kept and 0 < int(kept[1].replace(",", "")) < int(kept[2].replace(",", ""))
    r = float(re.search(r"bigram r = (\S+)", printed)[1])
    assert math.isfinite(r) and -1 <= r <= 1
    assert namespace["metrics"]["r_drop_inf"] == pytest.approx(r, abs=5e-4)
    ended = re.search(r"(\w+) after (\d+) steps, converged (\w+), stable (\w+)", printed)
    found = namespace["found"]
    assert ended.groups() == (
        found.ended,
        str(found.steps),
        str(found.converged),
        str(found.stable),
    )
    assert next(namespace["model"].parameters()).dtype == torch.bfloat16
    saved = Subnetwork.load(tmp_path / "smollm2-bigram")
    assert saved.mask.equals(namespace["found"].mask)
    assert len(saved.history) == saved.steps <= 20
