"""The authors' released mask pickles import as our Mask, and nothing but dicts, strings and
numpy bool arrays gets through the restricted unpickler. Their file names follow the authors'
loader, and downloads go through the Hugging Face cache: with HF_HUB_OFFLINE=1 a cached file is
found, a missing one is a clear error (tested against a cache written here; no network)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.hub import HubUnavailableError
from bigram_subnetworks.released import (
    ReleasedMaskUnavailable,
    download_released,
    fetch_released,
    load_released_mask,
    read_released_pickle,
    released_file,
)

from conftest import RunsCode, hub_snapshot_dir, make_tiny_model, released_dict


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_released_pickle_round_trips_into_our_mask(arch, tmp_path, protocol):
    model = make_tiny_model(arch)
    released = released_dict(model)
    path = tmp_path / "subnetwork_dict_lambda1e1.pickle"
    path.write_bytes(pickle.dumps(released, protocol=protocol))
    mask = load_released_mask(path, model)
    assert set(mask.tensors) == set(maskable_parameters(model))
    for name, tensor in mask.tensors.items():
        assert torch.equal(tensor, torch.from_numpy(released[name]))
    assert mask.n_kept == sum(int(a.sum()) for n, a in released.items() if n != "orig_model_name")


def test_wrapped_model_prefix_is_dropped(tmp_path):
    model = make_tiny_model("gpt2")
    released = {
        (k if k == "orig_model_name" else f"wrapped_model.{k}"): v
        for k, v in released_dict(model).items()
    }
    path = tmp_path / "m.pickle"
    path.write_bytes(pickle.dumps(released))
    assert load_released_mask(path, model).n_total == sum(
        w.numel() for w in maskable_parameters(model).values()
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"transformer.h.0.attn.c_attn.weight": RunsCode()},
        RunsCode(),
        {"w": torch.ones(2, dtype=torch.bool)},  # a torch tensor: its pickle names torch code
    ],
    ids=["code-in-dict", "code-at-top", "torch-tensor"],
)
def test_anything_but_numpy_arrays_is_refused_and_never_runs(in_tmp, payload):
    path = in_tmp / "evil.pickle"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match=r"evil.pickle: not a released mask file \(refusing"):
        read_released_pickle(path)
    assert not (in_tmp / "pwned").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([np.ones(2, dtype=bool)], "expected a dict of masks, got list"),
        ({"w": np.ones(2, dtype=np.float32)}, "'w' is float32, expected a numpy bool array"),
        ({"w": "text"}, "'w' is str, expected a numpy bool array"),
        ({3: np.ones(2, dtype=bool)}, "key 3 is not a parameter name"),
    ],
)
def test_other_contents_are_named(tmp_path, payload, message):
    path = tmp_path / "m.pickle"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match=message):
        read_released_pickle(path)


def test_names_or_shapes_of_another_model_are_refused(tmp_path):
    model = make_tiny_model("gpt_neox")
    released = released_dict(model)
    path = tmp_path / "m.pickle"
    path.write_bytes(pickle.dumps(released))
    with pytest.raises(ValueError, match="names do not match the model's maskable weights"):
        load_released_mask(path, make_tiny_model("gpt2"))
    name = next(n for n, w in maskable_parameters(model).items() if w.shape[0] != w.shape[1])
    released[name] = released[name].T
    path.write_bytes(pickle.dumps(released))
    with pytest.raises(ValueError, match=f"{name}' has shape"):
        load_released_mask(path, model)


@pytest.mark.parametrize(
    ("model", "lam", "repo_id", "filename"),
    [
        ("pythia-70m", None, "pythia-70m", "lambda1e1"),
        ("EleutherAI/pythia-1b", None, "pythia-1b", "lambda1e2"),
        ("pythia-1b", "1", "pythia-1b", "lambda1"),
        ("gpt2", "10", "gpt2-small", "lambda1e1"),
        ("openai-community/gpt2", 1, "gpt2-small", "lambda1"),
        ("gpt2-small", "lambda1e1", "gpt2-small", "lambda1e1"),
        ("openai-community/gpt2-large", 100, "gpt2-large", "lambda1e2"),
        ("pythia-410m", "1e1", "pythia-410m", "lambda1e1"),
    ],
)
def test_released_file_follows_the_authors_names(model, lam, repo_id, filename):
    assert released_file(model, lam) == (
        f"tylerachang/bigram-subnetworks-{repo_id}",
        f"subnetwork_dict_{filename}.pickle",
    )


@pytest.mark.parametrize(
    ("model", "lam", "message"),
    [
        ("pythia-2.8b", None, "no released bigram subnetwork for 'pythia-2.8b': released are"),
        ("pythia-70m", "100", "no released pythia-70m .* λ = '100': released are λ 1e1, 1$"),
        ("gpt2-medium", "ten", "λ 'ten' is not a number"),
    ],
)
def test_unreleased_models_and_lambdas_are_named(model, lam, message):
    with pytest.raises(ValueError, match=message):
        released_file(model, lam)


def _cache_file(cache: Path, repo_id: str, filename: str, data: bytes) -> Path:
    path = hub_snapshot_dir(cache, repo_id) / filename
    path.write_bytes(data)
    return path


def test_cached_file_is_found_offline_and_imports(arch, tmp_path):
    model = make_tiny_model(arch)
    released = released_dict(model)
    cached = _cache_file(tmp_path, *released_file("pythia-70m"), pickle.dumps(released))
    commit = cached.parent.name
    for revision in (None, "main", commit):
        path = download_released(
            "pythia-70m", "10", revision=revision, cache_dir=tmp_path, local_files_only=True
        )
        assert path == cached
    mask = load_released_mask(path, model)
    assert all(torch.equal(t, torch.from_numpy(released[n])) for n, t in mask.tensors.items())


def test_file_in_local_dir_is_found_offline(tmp_path):
    filename = released_file("gpt2-small").filename
    (tmp_path / filename).write_bytes(pickle.dumps(released_dict(make_tiny_model("gpt2"))))
    path = download_released("gpt2", local_dir=tmp_path, local_files_only=True)
    assert path == tmp_path / filename


def test_a_local_directory_as_the_repository_is_read_from_disk(tmp_path):
    """A mirror on disk (configs/rehearsal.yaml's released masks): never the hub."""
    (tmp_path / "subnetwork_dict_lambda1e1.pickle").write_bytes(b"x")
    found = fetch_released(str(tmp_path), "subnetwork_dict_lambda1e1.pickle")
    assert found == tmp_path / "subnetwork_dict_lambda1e1.pickle"
    with pytest.raises(ReleasedMaskUnavailable, match="does not exist in the local directory"):
        fetch_released(str(tmp_path), "subnetwork_dict_lambda1e2.pickle")


def test_missing_file_offline_is_a_clear_error(tmp_path):
    _cache_file(tmp_path, *released_file("pythia-70m", "1e1"), b"")  # another λ is cached
    with pytest.raises(ReleasedMaskUnavailable) as error:
        download_released("pythia-70m", "1", cache_dir=tmp_path, local_files_only=True)
    message = str(error.value)
    assert message.startswith(
        "tylerachang/bigram-subnetworks-pythia-70m/subnetwork_dict_lambda1.pickle (revision main) "
        "is not available offline"
    )
    assert str(tmp_path) in message and "snakemake --cores 1 downloads" in message
    assert isinstance(error.value, HubUnavailableError)


# Run with the environment huggingface_hub reads at import: HF_HUB_OFFLINE and HF_HUB_CACHE.
_OFFLINE_SCRIPT = """
import json, sys
from bigram_subnetworks.released import ReleasedMaskUnavailable, download_released
out = {"found": str(download_released("EleutherAI/pythia-160m"))}
try:
    download_released("EleutherAI/pythia-160m", "1")
except ReleasedMaskUnavailable as error:
    out["missing"] = str(error)
print(json.dumps(out))
"""


def test_hf_hub_offline_environment_reads_the_cache(tmp_path):
    model = make_tiny_model("gpt_neox")
    released = released_dict(model, seed=3)
    cache = tmp_path / "hub"
    cached = _cache_file(cache, *released_file("pythia-160m"), pickle.dumps(released))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["found"]) == cached
    assert load_released_mask(out["found"], model).n_kept == sum(
        int(a.sum()) for n, a in released.items() if n != "orig_model_name"
    )
    assert (
        "subnetwork_dict_lambda1.pickle (revision main) is not available offline" in out["missing"]
    )
    assert f"not in {cache} and offline (HF_HUB_OFFLINE=1" in out["missing"]
