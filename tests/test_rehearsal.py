"""A slice of configs/rehearsal.yaml in CI: Pythia-70M at its exact shape (a 50,277-token
tokenizer against the 50,304-row padded embedding), through download, tokens, bigram counts,
references, a 2-step mask at the paper's batch of 32 × 128 tokens, its evaluation and the
tables. The whole rehearsal is `make rehearsal` (docs/scale.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bigram_subnetworks.masking import Mask
from bigram_subnetworks.rehearsal import MODELS, TOKENIZERS, write_rehearsal

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.workflow

# Pythia-70M's maskable weights: 6 layers of QKV (3·512²), attention output, MLP (2·512·2048).
PYTHIA_70M_MASKABLE = 6 * (3 * 512 * 512 + 512 * 512 + 2 * 512 * 2048)


def test_pythia_70m_at_its_real_shape_runs_end_to_end(tmp_path):
    resources = tmp_path / "resources/rehearsal"
    write_rehearsal(resources, models=["pythia-70m"], final_only=True)
    rehearsal = yaml.safe_load((ROOT / "configs/rehearsal.yaml").read_text())
    model = {**rehearsal["models"][0], "hub": {"id": str(resources / "pythia-70m"),
                                               "revisions": ["main"]}}  # fmt: skip
    tokenizer = {
        "name": "pythia",
        "hub": {"id": str(resources / "tokenizers/pythia"), "revision": "main"},
    }
    slice_ = {
        "tokenizers": [tokenizer], "models": [model],
        "lambdas": [{"label": "10", "value": 10}],
        "bigram_masks": {"final": ["10"], "intermediate": []},
        "optimal_masks": {"models": [], "final": [], "size_matched": {"bigram": []}},
        "overlap": {"pairs": []}, "ablation": {"runs": []},
        "residual_stream": {"runs": []}, "released_masks": {"runs": []},
        # Fewer steps and sequences than the whole rehearsal (what is checked is the shapes):
        # 2 steps still write and clear a resume snapshot (every 2).
        "corpus": {"train_sequences": 256, "eval_sequences": 32},
        "mask_training": {"max_steps": 2}, "evaluation": {"max_sequences": 16},
    }  # fmt: skip
    (tmp_path / "slice.yaml").write_text(yaml.safe_dump(slice_))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [
        BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--cores", "2",
        "--configfile", ROOT / "configs/rehearsal.yaml", tmp_path / "slice.yaml",
        "--directory", tmp_path,
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    mask_dir = tmp_path / "results/masks/pythia-70m/main/bigram/lam-10/seed-0"
    mask = Mask.load(mask_dir / "mask.safetensors")
    assert mask.n_total == PYTHIA_70M_MASKABLE
    metrics = json.loads((mask_dir / "metrics.json").read_text())
    meta = json.loads((tmp_path / "results/tokens/pythia/meta.json").read_text())
    assert metrics["steps"] == 2 and meta["vocab_size"] == TOKENIZERS["pythia"]
    assert MODELS["pythia-70m"][1]["vocab_size"] == 50_304  # the padded embedding it ran on
    table = pd.read_csv(tmp_path / "results/tables/metrics.tsv", sep="\t", dtype={"lam": str})
    assert set(table["lam"]) == {"10"} and table["n_total"].iloc[0] == PYTHIA_70M_MASKABLE
    # What the paper run's estimates are checked against: this job's time and peak memory.
    benchmark = pd.read_csv(
        tmp_path / "results/benchmarks/train_mask/pythia-70m/main/bigram/lam-10/seed-0.tsv",
        sep="\t",
    )
    assert benchmark["max_rss"].iloc[0] > 0
