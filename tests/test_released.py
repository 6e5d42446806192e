"""The authors' released mask pickles import as our Mask, and nothing but dicts, strings and
numpy bool arrays gets through the restricted unpickler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.released import load_released_mask, read_released_pickle

from conftest import RunsCode, make_tiny_model


def _released_dict(model, seed: int = 0) -> dict:
    """What the reference's `get_mask_dict` writes: {HF parameter name: bool array} and the
    model name."""
    rng = np.random.default_rng(seed)
    masks = {
        name: rng.random(tuple(weight.shape)) < 0.1
        for name, weight in maskable_parameters(model).items()
    }
    return {**masks, "orig_model_name": "EleutherAI/pythia-70m"}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_released_pickle_round_trips_into_our_mask(arch, tmp_path, protocol):
    model = make_tiny_model(arch)
    released = _released_dict(model)
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
        for k, v in _released_dict(model).items()
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
    released = _released_dict(model)
    path = tmp_path / "m.pickle"
    path.write_bytes(pickle.dumps(released))
    with pytest.raises(ValueError, match="names do not match the model's maskable weights"):
        load_released_mask(path, make_tiny_model("gpt2"))
    name = next(n for n, w in maskable_parameters(model).items() if w.shape[0] != w.shape[1])
    released[name] = released[name].T
    path.write_bytes(pickle.dumps(released))
    with pytest.raises(ValueError, match=f"{name}' has shape"):
        load_released_mask(path, model)
