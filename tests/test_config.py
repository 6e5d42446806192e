"""The schema and the cross-checks reject bad configs by name; the grid is what the config says."""

import copy
from pathlib import Path

import pytest
import yaml

from bigram_subnetworks.config import ConfigError, Grid, MaskJob, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", ".test/config.yaml"])
def test_shipped_configs_validate(path):
    load_config(ROOT / path, SCHEMA)


def _error(config) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    return str(caught.value)


def test_unknown_key_is_named(config):
    config["mask_training"]["learning_rat"] = 0.1
    assert "mask_training: Additional properties are not allowed ('learning_rat'" in _error(config)


def test_wrong_type_is_named(config):
    config["models"][0]["pretrain"]["steps"] = "many"
    assert "models.0.pretrain.steps: 'many' is not of type 'integer'" in _error(config)


def test_out_of_range_value_is_named(config):
    config["corpus"]["eval_fraction"] = 1.5
    assert "corpus.eval_fraction: 1.5 is greater than or equal to the maximum" in _error(config)


def test_unsupported_architecture_is_named(config):
    config["models"][0]["arch"] = "llama"
    assert "models.0.arch: 'llama' is not one of ['gpt_neox', 'gpt2']" in _error(config)


def test_duplicate_lambda_labels(config):
    config["lambdas"].append({"label": "10", "value": 11})
    assert "lambdas: duplicate label '10'" in _error(config)


def test_reserved_and_unknown_lambda_labels(config):
    bad = copy.deepcopy(config)
    bad["lambdas"].append({"label": "full", "value": 3})
    assert "the label 'full' is reserved" in _error(bad)
    config["bigram_masks"]["final"].append("42")
    assert "bigram_masks.final: λ label '42' is not in lambdas" in _error(config)


def test_checkpoints_must_end_with_the_final_step(config):
    config["models"][0]["pretrain"]["checkpoints"] = [0, 100]
    assert "models.0 (pythia-tiny).pretrain.checkpoints: [0, 100] must be increasing" in _error(
        config
    )


def test_unknown_tokenizer_reference(config):
    config["models"][1]["tokenizer"] = "missing"
    assert "models.1 (gpt2-tiny).tokenizer: 'missing' is not in tokenizers" in _error(config)


def test_grid_enumerates_final_and_intermediate_masks(config):
    config["bigram_masks"] = {"final": ["full", "10"], "intermediate": ["1"]}
    config["models"] = config["models"][:1]
    config["models"][0]["pretrain"]["checkpoints"] = [0, 300, 1500]
    grid = Grid(config)
    assert grid.revisions("pythia-tiny") == ["step0", "step300", "step1500"]
    assert grid.mask_jobs() == [
        MaskJob("pythia-tiny", "step0", "bigram", "1"),
        MaskJob("pythia-tiny", "step300", "bigram", "1"),
        MaskJob("pythia-tiny", "step1500", "bigram", "full"),
        MaskJob("pythia-tiny", "step1500", "bigram", "10"),
    ]
    assert grid.mask_training("full")["lam"] == float("-inf")
    assert grid.mask_training("10")["lam"] == 10.0
