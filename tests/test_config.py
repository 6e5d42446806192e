"""The schema and the cross-checks reject bad configs by name; the grid is what the config says."""

import copy
import json
from dataclasses import astuple
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from bigram_subnetworks.config import (
    ConfigError,
    load_config,
    override_schema,
    validate_config,
)
from bigram_subnetworks.grid import Grid, MaskJob
from bigram_subnetworks.settings import MaskTrainingConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
OVERRIDE_SCHEMA = ROOT / "workflow/schemas/config.override.schema.yaml"
BASE = ROOT / "config.yaml"
# Merged over config.yaml by Snakemake (`--configfile`): each states only what differs from it.
ALTERNATIVES = [".test/config.yaml", "configs/paper.yaml", "configs/smollm2.yaml"]
GRIDS = ROOT / "tests/data/shipped_grids.json"
JOB_LISTS = ("mask_jobs", "overlap_jobs", "ablation_jobs", "lens_jobs")


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_the_default_config_validates():
    load_config(BASE, SCHEMA)


@pytest.mark.parametrize("path", ALTERNATIVES)
def test_alternative_configs_validate_merged_over_the_default(path):
    load_config(ROOT / path, SCHEMA, base=BASE)
    # What an editor checks (the file's first line): the file alone, against the override schema
    # (`make install` writes it from config.schema.yaml).
    Draft202012Validator(override_schema(yaml.safe_load(SCHEMA.read_text()))).validate(_raw(path))


@pytest.mark.parametrize(
    ("path", "schema"),
    [("config.yaml", SCHEMA), *((path, OVERRIDE_SCHEMA) for path in ALTERNATIVES)],
)
def test_editors_find_the_schema_on_the_first_line(path, schema):
    first = (ROOT / path).read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert ((ROOT / path).parent / first.removeprefix(prefix)).resolve() == schema


def test_override_schema_drops_required_outside_list_items_and_nothing_else():
    schema = {
        "required": ["a"],
        "properties": {
            "required": {"type": "object", "required": ["x"], "properties": {"x": {}}},
            "a": {"type": "array", "items": {"required": ["y"], "enum": [{"required": 1}]}},
        },
        "$defs": {"d": {"required": ["z"], "anyOf": [{"required": ["w"]}]}},
    }
    before = copy.deepcopy(schema)
    assert override_schema(schema) == {
        "properties": {
            "required": {"type": "object", "properties": {"x": {}}},
            "a": {"type": "array", "items": {"required": ["y"], "enum": [{"required": 1}]}},
        },
        "$defs": {"d": {"required": ["z"], "anyOf": [{"required": ["w"]}]}},
    }
    assert schema == before


def _properties(node, path=""):
    """(path, schema) of every property the schema declares, under properties, items, $defs."""
    if not isinstance(node, dict):
        return
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _properties(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _properties(node["items"], f"{path}[]")
    for name, sub in node.get("$defs", {}).items():
        yield from _properties(sub, f"$defs.{name}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(key, [])):
            yield from _properties(sub, f"{path}/{key}.{i}")


def test_every_property_of_the_schema_has_a_description():
    found = list(_properties(yaml.safe_load(SCHEMA.read_text())))
    assert len(found) > 100  # the walk reaches the nested sections
    assert [path for path, sub in found if not str(sub.get("description", "")).strip()] == []


def _job_rows(grid: Grid) -> dict[str, list[list]]:
    return {kind: [list(astuple(job)) for job in getattr(grid, kind)()] for kind in JOB_LISTS}


@pytest.mark.parametrize("path", ALTERNATIVES)
def test_alternative_configs_keep_their_grids(path):
    """Stated as what differs from config.yaml, each config has exactly the masks, overlaps,
    ablations and lenses it had when it stated everything (tests/data/shipped_grids.json)."""
    grid = Grid(load_config(ROOT / path, SCHEMA, base=BASE))
    assert _job_rows(grid) == json.loads(GRIDS.read_text())[path]


def test_the_test_grid_has_only_the_test_models():
    """Lists replace whole: nothing of config.yaml's models, tokenizers or λ leaks in."""
    grid = Grid(load_config(ROOT / ".test/config.yaml", SCHEMA, base=BASE))
    assert list(grid.models) == ["neox-test", "llama-test", "gpt2-test"]
    assert list(grid.tokenizers) == ["bpe512"] and list(grid.lambdas) == ["1", "0.1"]
    default_models = {model["name"] for model in _raw("config.yaml")["models"]}
    assert not default_models & {job.model for kind in JOB_LISTS for job in getattr(grid, kind)()}


def grid_of(config) -> Grid:
    return Grid(validate_config(config, SCHEMA))


def _raw(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


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


def test_unknown_precision_is_named(config):
    config["mask_training"]["precision"] = "fp16"
    expected = "mask_training.precision: 'fp16' is not one of ['auto', 'bf16', 'fp32']"
    assert expected in _error(config)


def test_unsupported_architecture_is_named(config):
    config["models"][0]["arch"] = "bert"
    expected = "models.0 (pythia-tiny).arch: 'bert' is not a supported architecture family"
    assert f"{expected} (one of gpt_neox, gpt2, llama, phi3, gptj, opt)" in _error(config)


def test_a_model_pretrained_here_needs_its_family(config):
    del config["models"][0]["arch"]
    assert "models.0 (pythia-tiny).arch: a model pretrained here needs its family" in _error(config)


def test_key_value_heads_only_where_the_layout_has_them(config):
    config["models"][0]["pretrain"]["num_kv_heads"] = 2
    assert (
        "models.0 (pythia-tiny).pretrain: num_kv_heads: the gpt_neox layout has as many "
        "key/value heads as query heads" in _error(config)
    )
    config["models"][0]["arch"] = "llama"
    config["models"][0]["pretrain"]["num_kv_heads"] = 3
    assert "models.0 (pythia-tiny).pretrain: num_kv_heads 3 does not divide num_heads 4" in (
        _error(config)
    )
    config["models"][0]["pretrain"]["num_kv_heads"] = 2
    assert grid_of(config).arch("pythia-tiny") == "llama"


def test_hub_sources_are_one_of_id_or_package(config):
    model = {"name": "m", "tokenizer": "bpe4k", "hub": {"id": "x", "package": "y"}}
    config["models"].append(model)
    assert "models.2 (m).hub: give exactly one of `id`" in _error(config)
    model["hub"] = {"package": "y"}
    assert "models.2 (m).hub.gguf_file: a `package` source names the file" in _error(config)


def test_tokenizer_of_a_model_must_name_a_hub_model(config):
    config["tokenizers"].append({"name": "own", "model": "pythia-tiny"})
    assert "tokenizers.1 (own).model: 'pythia-tiny' is not a hub model in models" in _error(config)


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
    assert (
        "models.0 (pythia-tiny).pretrain: checkpoint_steps must include the final step 500, "
        "got [0, 100]" in _error(config)
    )


def test_unknown_tokenizer_reference(config):
    config["models"][1]["tokenizer"] = "missing"
    assert "models.1 (gpt2-tiny).tokenizer: 'missing' is not in tokenizers" in _error(config)


def test_grid_enumerates_final_and_intermediate_masks(config):
    config["bigram_masks"] = {"final": ["full", "10"], "intermediate": ["10"]}
    config["models"] = config["models"][:1]
    config["models"][0]["pretrain"].update(steps=1500, checkpoints=[0, 300, 1500])
    config["optimal_masks"]["models"] = []
    config["optimal_masks"]["size_matched"]["bigram"] = []
    config["overlap"]["pairs"] = []
    config["ablation"]["runs"] = []
    config["residual_stream"].update(
        runs=[{"model": "pythia-tiny", "lam": "10"}], checkpoints="all"
    )
    grid = grid_of(config)
    assert [job.revision for job in grid.lens_jobs()] == ["step0", "step300", "step1500"]
    assert grid.revisions("pythia-tiny") == ["step0", "step300", "step1500"]
    assert grid.mask_jobs() == [
        MaskJob("pythia-tiny", "step0", "bigram", "10", 0),
        MaskJob("pythia-tiny", "step300", "bigram", "10", 0),
        MaskJob("pythia-tiny", "step1500", "bigram", "full", 0),
        MaskJob("pythia-tiny", "step1500", "bigram", "10", 0),
    ]
    assert grid.mask_training("pythia-tiny", "full", 0)["lam"] == float("-inf")
    assert grid.mask_training("pythia-tiny", "10", "3") == {
        **{k: v for k, v in config["mask_training"].items() if k != "seeds"},
        "lam": 10.0,
        "seed": 3,
    }


def test_grid_with_optimal_masks_and_seeds(config):
    config["models"] = config["models"][:1]
    config["bigram_masks"] = {"final": ["full", "10"], "intermediate": []}
    config["optimal_masks"]["models"] = ["pythia-tiny"]
    config["optimal_masks"]["final"] = ["100"]
    config["optimal_masks"]["size_matched"]["bigram"] = ["10"]
    config["mask_training"]["seeds"] = [0, 7]
    config["overlap"]["pairs"] = [{"model": "pythia-tiny", "bigram": "10", "optimal": "match-10"}]
    config["ablation"]["runs"] = [{"model": "pythia-tiny", "target": "optimal", "lam": "100"}]
    config["residual_stream"].update(
        runs=[{"model": "pythia-tiny", "lam": "10"}], checkpoints="final"
    )
    grid = grid_of(config)
    final = grid.revisions("pythia-tiny")[-1]
    # Sentinels do not depend on the seed: made once.
    assert grid.mask_jobs() == [
        MaskJob("pythia-tiny", final, "bigram", "full", 0),
        MaskJob("pythia-tiny", final, "bigram", "10", 0),
        MaskJob("pythia-tiny", final, "bigram", "10", 7),
        MaskJob("pythia-tiny", final, "optimal", "100", 0),
        MaskJob("pythia-tiny", final, "optimal", "100", 7),
        MaskJob("pythia-tiny", final, "optimal", "match-10", 0),
        MaskJob("pythia-tiny", final, "optimal", "match-10", 7),
    ]
    assert [(j.optimal_lam, j.seed) for j in grid.overlap_jobs()] == [
        ("match-10", 0), ("match-10", 7),
    ]  # fmt: skip
    assert [(j.target, j.lam, j.seed) for j in grid.ablation_jobs()] == [
        ("optimal", "100", 0),
        ("optimal", "100", 7),
    ]
    assert [(j.revision, j.seed) for j in grid.lens_jobs()] == [(final, 0), (final, 7)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["optimal_masks"].update(models=["nope"]),
            "optimal_masks.models: 'nope' is not in models",
        ),
        (
            lambda c: c["optimal_masks"].update(final=["full"]),
            "optimal_masks.final: 'full' does not depend on the target",
        ),
        (
            lambda c: c["optimal_masks"]["size_matched"].update(bigram=["1000"]),
            "optimal_masks.size_matched.bigram: '1000' is not a trained λ label",
        ),
        (
            lambda c: c["optimal_masks"]["size_matched"].update(bracket=[10, 1]),
            "optimal_masks.size_matched.bracket: [10, 1] must be increasing",
        ),
        (
            lambda c: c["overlap"]["pairs"][0].update(optimal="match-100"),
            "overlap.pairs.0.optimal: 'match-100' is not an optimal λ label",
        ),
        (
            lambda c: c["overlap"]["pairs"][0].update(bigram="empty"),
            "overlap.pairs.0.bigram: 'empty' is not a trained bigram λ label",
        ),
        (
            lambda c: c["ablation"]["runs"][0].update(lam="5"),
            "ablation.runs.0.lam: '5' is not a trained bigram λ label",
        ),
        (
            lambda c: c["overlap"].update(null_model="columns"),
            "overlap.null_model: 'columns' is not one of ['rows', 'entries']",
        ),
        (
            lambda c: c["mask_training"].update(seeds=[]),
            "mask_training.seeds: [] should be non-empty",
        ),
        (
            lambda c: (
                c["bigram_masks"].update(intermediate=[]),
                c["residual_stream"].update(checkpoints="all"),
            ),
            "residual_stream.runs.0.lam: '10' is not in bigram_masks.intermediate, but "
            "residual_stream.checkpoints is 'all'",
        ),
        (
            lambda c: c["residual_stream"]["runs"].append({"model": "x", "lam": "10"}),
            "residual_stream.runs.2.model: 'x' is not in models",
        ),
        (
            lambda c: c["lambdas"].append({"label": "match-x", "value": 1}),
            "lambdas: the prefix 'match-' of 'match-x' is reserved",
        ),
    ],
)
def test_analysis_config_errors_are_named(config, change, message):
    change(config)
    assert message in _error(config)


PYTHIA_REVISIONS = [
    *(f"step{n}" for n in (0, 128, 256, 512, 1000, 2000, 3000, 4000, 6000, 10000, 16000)),
    *(f"step{n}" for n in (25000, 40000, 63000, 100000, 143000)),
    "main",
]


def test_paper_config_is_the_papers_grid():
    grid = Grid(load_config(ROOT / "configs/paper.yaml", SCHEMA, base=BASE))
    # The paper's training values are the library's defaults (one place for them).
    paper = {k: v for k, v in grid.config.mask_training.items() if k != "seeds"}
    defaults = MaskTrainingConfig(lam=0.0)
    assert {k: getattr(defaults, k) for k in paper if k != "log_every"} == {
        k: v for k, v in paper.items() if k != "log_every"
    }
    pythia = ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b"]
    gpt2 = ["gpt2-small", "gpt2-medium", "gpt2-large"]
    assert list(grid.models) == pythia + gpt2 and grid.pretrained_models() == []
    for model in pythia:
        assert grid.revisions(model) == PYTHIA_REVISIONS
    assert all(grid.revisions(model) == ["main"] for model in gpt2)
    assert grid.hub_tokenizers() == ["pythia", "gpt2"]
    jobs = grid.mask_jobs()
    final = [j for j in jobs if j.revision == "main" and j.target == "bigram"]
    assert len(final) == 7 * 10  # {0, 1, 5, 10, 50, 100, 500, 1000} and ±∞ per model
    assert len([j for j in jobs if j.revision != "main"]) == 4 * 16 * 7
    assert len([j for j in jobs if j.target == "optimal"]) == 4 * 7
    # Pythia-1B: 2 micro-batches of 16 (docs/method.md §4), eval batches of 16 (docs/method.md §6).
    settings = grid.mask_training("pythia-1b", "100", 0)
    assert (settings["batch_size"], settings["grad_accum"], settings["lam"]) == (32, 2, 100.0)
    assert grid.mask_training("pythia-160m", "10", 0)["grad_accum"] == 1
    assert grid.evaluation("pythia-1b")["batch_size"] == 16
    assert grid.evaluation("gpt2-small") == {"batch_size": 32, "max_sequences": 10000}
    assert grid.resources("pythia-1b", "gpu", 0) == 1
    assert grid.model_directory("gpt2-large", "main") == "resources/models/gpt2-large/main"


def test_hub_model_and_its_overrides(config):
    config["tokenizers"].append({"name": "hubtok", "hub": {"id": "org/x", "revision": "main"}})
    config["models"].append(
        {
            "name": "mine",
            "arch": "gpt2",
            "tokenizer": "hubtok",
            "hub": {"id": "/data/my-model", "revisions": ["early", "late"]},
            "resources": {"gpu": 1, "mem_mb": 9000},
            "mask_training": {"batch_size": 4},
        }
    )
    grid = grid_of(config)
    assert grid.revisions("mine") == ["early", "late"] and grid.final_revision("mine") == "late"
    assert grid.is_hub_model("mine") and "mine" not in grid.pretrained_models()
    assert grid.trained_tokenizers() == ["bpe4k"] and grid.hub_tokenizers() == ["hubtok"]
    assert grid.mask_training("mine", "10", 0)["batch_size"] == 4
    assert grid.resources("mine", "mem_mb", 4000) == 9000
    assert grid.resources("mine", "runtime", 120) == 120
    assert (
        grid.model_directory("pythia-tiny", "step0")
        == "results/models/pythia-tiny/checkpoints/step0"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m.update(hub={"id": "org/x", "revisions": ["main"]}),
            "models.0 (pythia-tiny): give exactly one of `pretrain` (train it here) or `hub`",
        ),
        (lambda m: m.pop("pretrain"), "models.0 (pythia-tiny): give exactly one of `pretrain`"),
        (
            lambda m: m.update(mask_training={"grad_accum": 3}),
            "models.0 (pythia-tiny).mask_training: batch_size 8 is not divisible by grad_accum 3",
        ),
        (lambda m: m.update(resources={"gpus": 1}), "models.0.resources: Additional properties"),
    ],
)
def test_model_source_and_override_errors_are_named(config, change, message):
    change(config["models"][0])
    assert message in _error(config)


def test_tokenizer_needs_a_vocab_size_or_a_hub_source(config):
    config["tokenizers"][0].pop("vocab_size")
    message = "tokenizers.0 (bpe4k): give exactly one of `vocab_size` (a BPE trained here), `hub`"
    assert message in _error(config)


def test_released_mask_runs_are_checked(config):
    config["released_masks"]["runs"] = [
        {"model": "pythia-tiny", "lam": "10"},
        {"model": "nope", "lam": "10"},
        {"model": "gpt2-tiny", "lam": "3", "repo": "org/r", "filename": "f.pickle"},
    ]
    error = _error(config)
    assert (
        "released_masks.runs.0: 'pythia-tiny' is not a hub model; give repo and filename" in error
    )
    assert "released_masks.runs.1.model: 'nope' is not in models" in error
    assert "released_masks.runs.2.lam: '3' is not a trained bigram λ label" in error


def test_released_source_follows_the_authors_names_unless_configured():
    paper = _raw("config.yaml")
    pytest.importorskip("snakemake.utils").update_config(paper, _raw("configs/paper.yaml"))
    grid = grid_of(paper)
    assert grid.released_source("pythia-1b", "100") == {
        "repo_id": "tylerachang/bigram-subnetworks-pythia-1b",
        "filename": "subnetwork_dict_lambda1e2.pickle",
    }
    paper["released_masks"]["runs"] = [{"model": "gpt2-small", "lam": "10", "repo": "me/mirror"}]
    assert grid_of(paper).released_source("gpt2-small", "10") == {
        "repo_id": "me/mirror",
        "filename": "subnetwork_dict_lambda1e1.pickle",
    }


GRIDS_ABOUT = (
    "Grid(config).mask_jobs(), .overlap_jobs(), .ablation_jobs() and .lens_jobs() of the shipped "
    "alternative configs merged over config.yaml, first computed from the full configs before "
    "they were cut down to what differs from config.yaml; one job per row, its dataclass fields "
    "in order. tests/test_config.py checks the configs still give exactly these. Regenerate only "
    "when a grid is meant to change: .venv/bin/python tests/test_config.py"
)


def _grids_text() -> str:
    """The text of tests/data/shipped_grids.json for the configs as they are: one job a line."""
    blocks = [f'  "about": {json.dumps(GRIDS_ABOUT, ensure_ascii=False)}']
    for path in ALTERNATIVES:
        lists = _job_rows(Grid(load_config(ROOT / path, SCHEMA, base=BASE)))
        kinds = [
            f'    "{kind}": [\n'
            + ",\n".join(f"      {json.dumps(row, ensure_ascii=False)}" for row in rows)
            + "\n    ]"
            for kind, rows in lists.items()
        ]
        blocks.append(f'  "{path}": {{\n' + ",\n".join(kinds) + "\n  }")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


if __name__ == "__main__":
    GRIDS.write_text(_grids_text())


def test_the_validated_config_is_read_through_its_schema():
    """One declaration per key (the schema): a declared key left out reads as its schema
    default or None, a key the schema does not declare fails by name, nothing can be changed."""
    config = load_config(ROOT / "configs/smollm2.yaml", SCHEMA, base=BASE)
    assert config.corpus.seq_len == 64 and config.corpus.source == "offline_english"
    model = config.model("smollm2-135m")
    assert model.hub.revisions == ("main",)  # the schema's default for a package
    assert model.hub.id is None and model.pretrain is None  # declared, not given
    assert model.mask_training == {} and dict(model.resources)["threads"] == 1
    with pytest.raises(AttributeError, match="has no key 'seq_length'"):
        config.corpus.seq_length  # noqa: B018 - the attribute access is the test
    with pytest.raises(AttributeError, match="read-only"):
        config.corpus.seq_len = 128
    assert config.lambdas == {"10": 10.0, "100": 100.0, "1000": 1000.0}
    assert config.mask_settings(model)["learning_rate"] == 0.005
    assert "seeds" not in config.mask_settings(model)
