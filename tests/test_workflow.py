"""The workflow as a user runs it: lint, formatting, the DAG, and `.test/config.yaml` end to end."""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from bigram_subnetworks.io import load_model
from bigram_subnetworks.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.workflow


def run(*args, cwd=ROOT, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def snakemake(*args, cwd=ROOT, check=True):
    return run(BIN / "snakemake", "--snakefile", ROOT / "Snakefile", *args, cwd=cwd, check=check)


def job_counts(dry_run_output: str) -> Counter:
    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)})


def test_snakemake_lint_is_clean():
    result = snakemake("--lint")
    assert "Congratulations" in result.stdout + result.stderr


def test_snakefmt_and_ruff_are_clean():
    run(BIN / "snakefmt", "--check", "Snakefile", "workflow")
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")


def test_default_dag():
    counts = job_counts(snakemake("-n", "--forceall").stdout)
    # 2 models × (4 λ + full + empty) at the final checkpoint.
    assert counts["train_mask"] == counts["evaluate_mask"] == 12
    assert counts["pretrain"] == 2 and counts["corpus"] == counts["tokenize"] == 1


def test_test_config_replaces_the_default_grid():
    """`--configfile` merges over config.yaml: lists must replace, so no default model leaks in."""
    output = snakemake("-n", "--forceall", "--configfile", ".test/config.yaml").stdout
    counts = job_counts(output)
    assert counts["pretrain"] == 2 and counts["train_mask"] == 6
    assert "pythia-tiny" not in output and "neox-test" in output


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mask_training:\n  learning_rat: 0.1\n")
    result = snakemake("-n", "--configfile", bad, check=False)
    assert result.returncode != 0
    assert "learning_rat" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def test_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    args = ("--configfile", ROOT / ".test/config.yaml", "--directory", workdir)
    snakemake("--cores", "2", *args)
    return workdir, args


def test_every_output_exists(test_run):
    workdir, _ = test_run
    for model in ("neox-test", "gpt2-test"):
        checkpoint = workdir / f"results/models/{model}/checkpoints/step40"
        # Each checkpoint carries its tokenizer, as a hub snapshot does.
        assert len(load_tokenizer(checkpoint)) == 512
        assert load_model(checkpoint).config.vocab_size == 512
        for lam in ("full", "empty", "10"):
            mask_dir = workdir / f"results/masks/{model}/step40/bigram/lam-{lam}"
            for name in (
                "mask.safetensors",
                "history.tsv",
                "meta.json",
                "metrics.json",
                "layers.tsv",
            ):
                assert (mask_dir / name).stat().st_size > 0, mask_dir / name
            assert json.loads((mask_dir / "meta.json").read_text())["lam"] == lam
    for figure in ("r_vs_size", "kept_by_layer", "pretraining"):
        for suffix in ("png", "pdf"):
            assert (workdir / f"results/figures/{figure}.{suffix}").stat().st_size > 1000
    assert not list(workdir.rglob(".*.tmp*"))


def test_tables_have_the_documented_columns(test_run):
    workdir, _ = test_run
    tables = workdir / "results/tables"
    metrics = pd.read_csv(tables / "metrics.tsv", sep="\t", dtype={"lam": str})
    assert {
        "model",
        "arch",
        "revision",
        "step",
        "target",
        "lam",
        "lam_value",
        "n_kept",
        "n_total",
        "kept_fraction",
        "r_clip_inf",
        "r_drop_inf",
        "xent_bigram",
        "eval_loss",
    } <= set(metrics.columns)
    assert len(metrics) == 6
    by_lam = metrics.set_index(["model", "lam"])["kept_fraction"]
    assert (by_lam.xs("full", level="lam") == 1.0).all()
    assert (by_lam.xs("empty", level="lam") == 0.0).all()
    layers = pd.read_csv(tables / "layers.tsv", sep="\t", dtype={"lam": str})
    assert {"layer", "block", "n_kept", "n_total", "kept_fraction"} <= set(layers.columns)
    assert len(layers) == 6 * 2 * 6  # masks × layers × blocks
    pretraining = pd.read_csv(tables / "pretraining.tsv", sep="\t")
    assert {"model", "step", "eval_loss", "bigram_loss", "unigram_loss"} <= set(pretraining)


def test_second_run_has_nothing_to_do(test_run):
    _, args = test_run
    result = snakemake("-n", *args)
    assert "Nothing to be done" in result.stdout + result.stderr
