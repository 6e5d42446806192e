"""The paper run without a GPU or the hub: its DAG is built offline with the expected jobs, and
the conda environment every rule declares (`snakemake --lint` checks they do) carries the
library's dependencies."""

import tomllib
from pathlib import Path

import pytest
import yaml

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
    assert counts["plot"] == 7  # no pretraining curves: every model comes from the hub
    # Every mask the authors released (2 λ per model, 3 for Pythia-1B and GPT-2 large).
    for rule in ("download_released_mask", "import_released_mask", "parity"):
        assert counts[rule] == 2 * (PYTHIA + GPT2) + 2
    assert not (tmp_path / "results").exists()


def test_conda_environment_has_the_librarys_dependencies():
    """The env holds what pyproject.toml requires (less Snakemake, which runs the jobs), with
    the same version ranges, so `--sdm conda` jobs import what the venv's do."""
    env = yaml.safe_load((ROOT / "envs/pipeline.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(pip) == {spec for spec in project if not spec.startswith("snakemake")}
    # A relative `-e ..` would break: Snakemake copies the env file under .snakemake/conda/.
    assert not any(spec.startswith("-e") for spec in pip)
