"""The paper run without a GPU or the hub: its DAG is built offline with the expected jobs, and
the conda environment every rule declares (`snakemake --lint` checks they do) carries the
library's dependencies."""

import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from bigram_subnetworks.config import load_config
from bigram_subnetworks.grid import Grid, ModelSize, storage_estimate

from test_workflow import job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]

PYTHIA, GPT2 = 4, 3
PYTHIA_REVISIONS = 17  # step0 … step143000 (16 checkpoints) + main
FINAL_LAMBDAS = 10  # {0, 1, 5, 10, 50, 100, 500, 1000} and ±∞
INTERMEDIATE_LAMBDAS = 7  # {0, 1, 10, 100, 500} and ±∞
OPTIMAL_MODELS, OPTIMAL_LAMBDAS = 4, 7  # {1, 5, 10, 50, 100, 500, 1000}


@pytest.mark.workflow
def test_paper_dag_is_built_offline_with_the_papers_jobs(tmp_path, monkeypatch):
    # Any attempt to reach the network during DAG construction fails through a dead proxy.
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    args = ("--configfile", ROOT / "configs/paper.yaml", "--directory", tmp_path)
    counts = job_counts(snakemake("-n", *args).stdout)
    masks = (PYTHIA + GPT2) * FINAL_LAMBDAS + PYTHIA * (PYTHIA_REVISIONS - 1) * INTERMEDIATE_LAMBDAS
    masks += OPTIMAL_MODELS * OPTIMAL_LAMBDAS
    assert counts["train_mask"] == masks == 546
    assert counts["evaluate_mask"] == masks
    assert counts["download_model"] == PYTHIA * PYTHIA_REVISIONS + GPT2
    assert counts["download_tokenizer"] == 2 and counts["train_tokenizer"] == 0
    assert counts["tokenize"] == counts["count_bigrams"] == 2 and counts["corpus"] == 1
    assert counts["pretrain"] == 0 and counts["match_mask_size"] == 0
    assert counts["overlap"] == 4 and counts["ablation"] == 3
    # Pythia-160M and 1B at every revision, GPT-2 small at its only one.
    assert counts["lens"] == 2 * PYTHIA_REVISIONS + 1
    assert counts["plot"] == 9  # no pretraining curves: every model comes from the hub
    # The references every r is read against: per tokenizer, and per model × checkpoint.
    assert counts["bigram_references"] == 2
    assert counts["context_free"] == PYTHIA * PYTHIA_REVISIONS + GPT2
    # Every mask the authors released (2 λ per model, 3 for Pythia-1B and GPT-2 large).
    for rule in ("download_released_mask", "import_released_mask", "parity"):
        assert counts[rule] == 2 * (PYTHIA + GPT2) + 2
    assert not (tmp_path / "results").exists()


def test_conda_environment_has_the_librarys_dependencies():
    """The env holds what pyproject.toml requires for the library and the workflow (less
    Snakemake, which runs the jobs), with the same version ranges, so `--sdm conda` jobs import
    what the venv's do."""
    env = yaml.safe_load((ROOT / "envs/pipeline.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = project["dependencies"] + project["optional-dependencies"]["workflow"]
    assert set(pip) == {spec for spec in needed if not spec.startswith("snakemake")}
    # A relative `-e ..` would break: Snakemake copies the env file under .snakemake/conda/.
    assert not any(spec.startswith("-e") for spec in pip)


# The paper's models, as their hub configs give them (hidden size, layers, heads, MLP width),
# and the bytes per stored weight of their hub snapshots (Pythia fp16, GPT-2 fp32).
PAPER_MODELS = {
    "pythia-70m": ("gpt_neox", 512, 6, 8, 2048, 2),
    "pythia-160m": ("gpt_neox", 768, 12, 12, 3072, 2),
    "pythia-410m": ("gpt_neox", 1024, 24, 16, 4096, 2),
    "pythia-1b": ("gpt_neox", 2048, 16, 8, 8192, 2),
    "gpt2-small": ("gpt2", 768, 12, 12, 3072, 4),
    "gpt2-medium": ("gpt2", 1024, 24, 16, 4096, 4),
    "gpt2-large": ("gpt2", 1280, 36, 20, 5120, 4),
}


def _paper_model_size(family, hidden, layers, heads, mlp, stored_bytes):
    if family == "gpt_neox":
        config = GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=mlp,
                               tie_word_embeddings=False)  # fmt: skip
        builder = GPTNeoXForCausalLM
    else:
        config = GPT2Config(vocab_size=50257, n_embd=hidden, n_layer=layers, n_head=heads)
        builder = GPT2LMHeadModel
    with torch.device("meta"):
        return ModelSize.of(builder(config), stored_bytes)


def test_paper_run_disk_estimate_is_the_documented_one():
    """docs/scale.md states the disk the paper run needs; it is `grid.storage_estimate` of
    configs/paper.yaml with the paper models' sizes (built on the meta device, no weights)."""
    config = load_config(
        ROOT / "configs/paper.yaml", ROOT / "workflow/schemas/config.schema.yaml",
        base=ROOT / "config.yaml",
    )  # fmt: skip
    grid = Grid(config)
    sizes = {name: _paper_model_size(*PAPER_MODELS[name]) for name in grid.models}
    assert sizes["pythia-70m"].parameters == 70_426_624  # the hub model's count
    assert sizes["gpt2-small"].parameters == 124_439_808
    estimate = storage_estimate(grid, sizes)
    documented = re.search(
        r"about \*\*(\d+) GB\*\*: model snapshots (\d+) GB, masks (\d+) GB",
        (ROOT / "docs/scale.md").read_text(),
    )
    assert documented, "docs/scale.md no longer states the estimate"
    total, snapshots, masks = map(int, documented.groups())
    assert (total, snapshots, masks) == (
        round(estimate["total_gb"]),
        round(estimate["snapshots_gb"]),
        round(estimate["masks_gb"]),
    )
