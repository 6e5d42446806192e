"""Validating the pipeline configuration and enumerating the experiment grid from it.

The JSON schema catches unknown keys, wrong types and out-of-range values; `validate_config` adds
the checks a schema cannot express (references between sections, unique labels, checkpoint lists)
and names the offending key and value. Everything the Snakefile needs to know about the grid
comes from here, so it is testable without Snakemake.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from .architectures import REGISTRY

# λ labels with no training: keep every maskable weight (λ = −∞) or none (λ = +∞).
SENTINELS = {"full": -math.inf, "empty": math.inf}
# Label prefix of size-matched optimal subnetworks: `match-10` is the optimal subnetwork whose
# size matches the bigram subnetwork `10` (its λ is found by bisection, not configured).
MATCHED_PREFIX = "match-"
TARGETS = ("bigram", "optimal")
# The revision of a hub model configured without `revisions` (a package ships one).
DEFAULT_REVISIONS = ("main",)


TOKENIZER_SOURCES = ("vocab_size", "hub", "model")


class ConfigError(ValueError):
    """A configuration problem, reported before any job runs."""


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _schema_errors(config: Mapping, schema_path: Path) -> list[str]:
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = Draft202012Validator(schema)
    return [
        f"{_where(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]


def _duplicates(values) -> list:
    seen, dups = set(), []
    for value in values:
        if value in seen:
            dups.append(value)
        seen.add(value)
    return dups


def _model_errors(i: int, model: Mapping, config: Mapping) -> list[str]:
    where = f"models.{i} ({model['name']})"
    errors = []
    tokenizers = {t["name"] for t in config["tokenizers"]}
    if model["tokenizer"] not in tokenizers:
        errors.append(f"{where}.tokenizer: {model['tokenizer']!r} is not in tokenizers")
    training = {**config["mask_training"], **model.get("mask_training", {})}
    if training["batch_size"] % training["grad_accum"]:
        errors.append(
            f"{where}.mask_training.grad_accum: {training['grad_accum']} does not divide "
            f"batch_size {training['batch_size']}"
        )
    if ("pretrain" in model) == ("hub" in model):
        errors.append(
            f"{where}: give exactly one of `pretrain` (train it here) or `hub` (a hub id or "
            "local directory, with revisions)"
        )
    arch = model.get("arch")
    if arch is not None and arch not in REGISTRY:
        errors.append(
            f"{where}.arch: {arch!r} is not a supported architecture family "
            f"(one of {', '.join(REGISTRY)})"
        )
    if "hub" in model:
        hub = model["hub"]
        if ("id" in hub) == ("package" in hub):
            errors.append(
                f"{where}.hub: give exactly one of `id` (a hub repository or local directory) "
                "or `package` (an installed Python package that ships the weights)"
            )
        if "package" in hub and "gguf_file" not in hub:
            errors.append(f"{where}.hub.gguf_file: a `package` source names the file it ships")
        if "package" in hub and len(hub.get("revisions", ["main"])) != 1:
            errors.append(f"{where}.hub.revisions: a `package` source has one revision")
    if "pretrain" not in model:
        return errors
    if arch is None:
        errors.append(f"{where}.arch: a model pretrained here needs its family (`arch`)")
    pre = model["pretrain"]
    points = pre["checkpoints"]
    if points != sorted(points) or points[-1] != pre["steps"]:
        errors.append(
            f"{where}.pretrain.checkpoints: {points} must be increasing and end with "
            f"steps ({pre['steps']})"
        )
    if pre["hidden_size"] % pre["num_heads"]:
        errors.append(
            f"{where}.pretrain.num_heads: {pre['num_heads']} does not divide "
            f"hidden_size {pre['hidden_size']}"
        )
    kv_heads = pre.get("num_kv_heads")
    if kv_heads is not None and pre["num_heads"] % kv_heads:
        errors.append(
            f"{where}.pretrain.num_kv_heads: {kv_heads} does not divide num_heads "
            f"{pre['num_heads']}"
        )
    if kv_heads is not None and arch in REGISTRY and not REGISTRY[arch].grouped_query:
        errors.append(
            f"{where}.pretrain.num_kv_heads: the {arch} layout has as many key/value heads as "
            "query heads"
        )
    seq_len = config["corpus"]["seq_len"]
    if pre["max_positions"] < seq_len:
        errors.append(
            f"{where}.pretrain.max_positions: {pre['max_positions']} < corpus.seq_len {seq_len}"
        )
    return errors


def _label_errors(config: Mapping) -> list[str]:
    """λ labels used by the mask grids, the pairs and the ablation runs must be defined."""
    errors = []
    labels = {item["label"] for item in config["lambdas"]}
    for reserved in SENTINELS:
        if reserved in labels:
            errors.append(f"lambdas: the label {reserved!r} is reserved for λ = ±∞")
    for label in labels:
        if label.startswith(MATCHED_PREFIX):
            errors.append(f"lambdas: the prefix {MATCHED_PREFIX!r} of {label!r} is reserved")
    for which in ("final", "intermediate"):
        for label in config["bigram_masks"][which]:
            if label not in labels and label not in SENTINELS:
                errors.append(f"bigram_masks.{which}: λ label {label!r} is not in lambdas")
    optimal = config["optimal_masks"]
    for label in optimal["final"]:
        if label in SENTINELS:
            errors.append(
                f"optimal_masks.final: {label!r} does not depend on the target; "
                "it is in bigram_masks already"
            )
        elif label not in labels:
            errors.append(f"optimal_masks.final: λ label {label!r} is not in lambdas")
    matched = optimal["size_matched"]
    for label in matched["bigram"]:
        if label in SENTINELS or label not in config["bigram_masks"]["final"]:
            errors.append(
                f"optimal_masks.size_matched.bigram: {label!r} is not a trained λ label of "
                "bigram_masks.final"
            )
    low, high = matched["bracket"]
    if low >= high:
        errors.append(f"optimal_masks.size_matched.bracket: {[low, high]} must be increasing")
    return errors


def _pair_errors(config: Mapping, models: set) -> list[str]:
    """Overlap pairs and ablation runs must name masks the grid trains."""
    errors = []
    optimal = config["optimal_masks"]
    optimal_labels = set(optimal["final"]) | {
        MATCHED_PREFIX + label for label in optimal["size_matched"]["bigram"]
    }
    trained = {
        "bigram": set(config["bigram_masks"]["final"]) - set(SENTINELS),
        "optimal": optimal_labels,
    }
    for i, pair in enumerate(config["overlap"]["pairs"]):
        where = f"overlap.pairs.{i}"
        if pair["model"] not in models:
            errors.append(f"{where}.model: {pair['model']!r} is not in models")
        elif pair["model"] not in optimal["models"]:
            errors.append(f"{where}.model: {pair['model']!r} is not in optimal_masks.models")
        if pair["bigram"] not in trained["bigram"]:
            errors.append(f"{where}.bigram: {pair['bigram']!r} is not a trained bigram λ label")
        if pair["optimal"] not in trained["optimal"]:
            errors.append(
                f"{where}.optimal: {pair['optimal']!r} is not an optimal λ label "
                f"(one of {sorted(trained['optimal'])})"
            )
    for i, run in enumerate(config["ablation"]["runs"]):
        where = f"ablation.runs.{i}"
        if run["model"] not in models:
            errors.append(f"{where}.model: {run['model']!r} is not in models")
        elif run["target"] == "optimal" and run["model"] not in optimal["models"]:
            errors.append(f"{where}.model: {run['model']!r} is not in optimal_masks.models")
        if run["lam"] not in trained[run["target"]]:
            errors.append(
                f"{where}.lam: {run['lam']!r} is not a trained {run['target']} λ label "
                "at the final checkpoint"
            )
    errors += _released_errors(config, models, trained["bigram"])
    residual = config["residual_stream"]
    for i, run in enumerate(residual["runs"]):
        where = f"residual_stream.runs.{i}"
        if run["model"] not in models:
            errors.append(f"{where}.model: {run['model']!r} is not in models")
        if run["lam"] not in trained["bigram"]:
            errors.append(f"{where}.lam: {run['lam']!r} is not a trained bigram λ label")
        elif (
            residual["checkpoints"] == "all"
            and run["lam"] not in config["bigram_masks"]["intermediate"]
        ):
            errors.append(
                f"{where}.lam: {run['lam']!r} is not in bigram_masks.intermediate, but "
                "residual_stream.checkpoints is 'all'"
            )
    return errors


def released_source(run: Mapping, model: Mapping) -> dict[str, str]:
    """Hub repo and file of a released-mask run: configured (`repo`, `filename`), else the
    authors' naming for the model's hub id and λ. A ValueError names what is missing."""
    if "repo" in run and "filename" in run:
        return {"repo_id": run["repo"], "filename": run["filename"]}
    if "hub" not in model:
        raise ValueError(f"{model['name']!r} is not a hub model; give repo and filename")
    from .released import released_file  # imports torch: only for configs that need it

    repo_id, filename = released_file(model["hub"]["id"], run["lam"])
    return {"repo_id": run.get("repo", repo_id), "filename": run.get("filename", filename)}


def _released_errors(config: Mapping, models: set, bigram_labels: set) -> list[str]:
    """Released-mask runs name a model, one of our trained bigram λ labels, and (unless given)
    a release the authors published."""
    errors = []
    for i, run in enumerate(config["released_masks"]["runs"]):
        where = f"released_masks.runs.{i}"
        if run["model"] not in models:
            errors.append(f"{where}.model: {run['model']!r} is not in models")
            continue
        if run["lam"] not in bigram_labels:
            errors.append(f"{where}.lam: {run['lam']!r} is not a trained bigram λ label")
        model = next(m for m in config["models"] if m["name"] == run["model"])
        try:
            released_source(run, model)
        except ValueError as error:
            errors.append(f"{where}: {error}")
    return errors


def _cross_errors(config: Mapping) -> list[str]:
    errors = []
    for section, key in (("models", "name"), ("tokenizers", "name"), ("lambdas", "label")):
        for dup in _duplicates(item[key] for item in config[section]):
            errors.append(f"{section}: duplicate {key} {dup!r}")
    errors += _label_errors(config)
    hub_models = {m["name"] for m in config["models"] if "hub" in m}
    for i, tokenizer in enumerate(config["tokenizers"]):
        where = f"tokenizers.{i} ({tokenizer['name']})"
        if sum(key in tokenizer for key in TOKENIZER_SOURCES) != 1:
            errors.append(
                f"{where}: give exactly one of `vocab_size` (a BPE trained here), `hub` (a hub "
                "repository's tokenizer) or `model` (a hub model's own tokenizer)"
            )
        if "model" in tokenizer and tokenizer["model"] not in hub_models:
            errors.append(f"{where}.model: {tokenizer['model']!r} is not a hub model in models")
    for i, model in enumerate(config["models"]):
        errors += _model_errors(i, model, config)
    models = {m["name"] for m in config["models"]}
    for model in config["optimal_masks"]["models"]:
        if model not in models:
            errors.append(f"optimal_masks.models: {model!r} is not in models")
    errors += _pair_errors(config, models)
    train = config["mask_training"]
    if train["batch_size"] % train["grad_accum"]:
        errors.append(
            f"mask_training.grad_accum: {train['grad_accum']} does not divide "
            f"batch_size {train['batch_size']}"
        )
    if config["corpus"]["source"] == "local" and not config["corpus"]["local_paths"]:
        errors.append("corpus.local_paths: empty, but corpus.source is 'local'")
    return errors


def validate_config(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise `ConfigError` listing every problem, each naming its key and value."""
    errors = _schema_errors(config, Path(schema_path))
    if not errors:
        errors = _cross_errors(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


def load_config(path: str | Path, schema_path: str | Path) -> dict[str, Any]:
    config = yaml.safe_load(Path(path).read_text())
    validate_config(config, schema_path)
    return config


@dataclass(frozen=True)
class MaskJob:
    """One mask to train: the wildcards of `train_mask`."""

    model: str
    revision: str
    target: str
    lam: str
    seed: int


@dataclass(frozen=True)
class OverlapJob:
    """One (bigram, optimal) pair at a model's final checkpoint, for one seed."""

    model: str
    revision: str
    bigram: str
    optimal: str
    seed: int


@dataclass(frozen=True)
class LensJob:
    """One bigram subnetwork's residual-stream analyses at one checkpoint, for one seed."""

    model: str
    revision: str
    lam: str
    seed: int


class Grid:
    """Lookups and the experiment grid of a validated configuration."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.models = {m["name"]: m for m in config["models"]}
        self.tokenizers = {t["name"]: t for t in config["tokenizers"]}
        self.lambdas = {item["label"]: float(item["value"]) for item in config["lambdas"]}
        self.seeds = list(config["mask_training"]["seeds"])
        self.matched_labels = [
            MATCHED_PREFIX + label for label in config["optimal_masks"]["size_matched"]["bigram"]
        ]
        # Families of hub models configured without `arch`, read from their checkpoints.
        self.inferred_archs: dict[str, str] = {}

    def lambda_value(self, label: str) -> float:
        """λ of a configured or sentinel label (size-matched labels have no configured λ)."""
        return SENTINELS[label] if label in SENTINELS else self.lambdas[label]

    def revisions(self, model: str) -> list[str]:
        """Checkpoints in training order: `step{N}` of a model pretrained here, or the configured
        hub revisions; the last is the final one."""
        entry = self.models[model]
        if "hub" in entry:
            return list(entry["hub"].get("revisions", DEFAULT_REVISIONS))
        return [f"step{step}" for step in entry["pretrain"]["checkpoints"]]

    def is_hub_model(self, model: str) -> bool:
        return "hub" in self.models[model]

    def pretrained_models(self) -> list[str]:
        """Models pretrained in the pipeline (not from the hub), in config order."""
        return [name for name in self.models if not self.is_hub_model(name)]

    def hub_models(self) -> list[str]:
        """Models taken from the hub (or a local directory), in config order."""
        return [name for name in self.models if self.is_hub_model(name)]

    def hub_tokenizers(self) -> list[str]:
        """Tokenizers taken from elsewhere: a hub repository's, or a hub model's own."""
        return [name for name, tok in self.tokenizers.items() if "vocab_size" not in tok]

    def trained_tokenizers(self) -> list[str]:
        return [name for name, tok in self.tokenizers.items() if "vocab_size" in tok]

    def tokenizer_source(self, tokenizer: str) -> dict[str, str]:
        """Hub id (or local directory) and revision of a tokenizer taken from elsewhere: its
        configured repository, or the final snapshot of the model it belongs to."""
        entry = self.tokenizers[tokenizer]
        if "model" in entry:
            model = entry["model"]
            revision = self.final_revision(model)
            return {"id": self.model_directory(model, revision), "revision": revision}
        return dict(entry["hub"])

    def check_hub_families(self) -> None:
        """Check every hub model's configured family against its checkpoint's `model_type`
        (or infer it when `arch` is absent), from metadata alone, before any job runs
        (`hub.check_families`); a problem is a `ConfigError` naming the model."""
        from .hub import check_families

        hub_models = {name: self.models[name] for name in self.hub_models()}
        finals = {name: self.final_revision(name) for name in hub_models}
        snapshots = {name: self.model_directory(name, finals[name]) for name in hub_models}
        try:
            self.inferred_archs = check_families(hub_models, finals, snapshots)
        except ValueError as error:
            raise ConfigError(f"invalid configuration:\n  models: {error}") from error

    def arch(self, model: str) -> str:
        """The model's family: configured, or inferred from its checkpoint
        (`hub.check_families`, run when the DAG is built)."""
        arch = self.models[model].get("arch") or self.inferred_archs.get(model)
        if arch is None:
            raise ConfigError(f"models: the family of {model!r} is not known yet")
        return arch

    def model_directory(self, model: str, revision: str) -> str:
        """Where the loadable model of one revision lives (`save_pretrained` layout)."""
        kind = "hub" if self.is_hub_model(model) else "checkpoints"
        return f"results/models/{model}/{kind}/{revision}"

    def resources(self, model: str, name: str, default: int) -> int:
        return self.models[model].get("resources", {}).get(name, default)

    def evaluation(self, model: str) -> dict[str, Any]:
        """The evaluation settings with the model's overrides (e.g. a smaller batch)."""
        return {**self.config["evaluation"], **self.models[model].get("evaluation", {})}

    def final_revision(self, model: str) -> str:
        return self.revisions(model)[-1]

    def tokenizer_of(self, model: str) -> str:
        return self.models[model]["tokenizer"]

    def mask_jobs(self) -> list[MaskJob]:
        """Every mask of the grid: bigram masks at every checkpoint, optimal ones (configured λ,
        then size-matched) at the final checkpoint of their models; each for every seed, except
        the sentinels, which do not depend on it (first seed only)."""
        cells = []
        masks = self.config["bigram_masks"]
        for model in self.models:
            final = self.final_revision(model)
            for revision in self.revisions(model):
                labels = masks["final"] if revision == final else masks["intermediate"]
                cells += [(model, revision, "bigram", lam) for lam in labels]
        optimal = self.config["optimal_masks"]
        for model in optimal["models"]:
            labels = optimal["final"] + self.matched_labels
            cells += [(model, self.final_revision(model), "optimal", lam) for lam in labels]
        return [
            MaskJob(*cell, seed)
            for cell in cells
            for seed in (self.seeds[:1] if cell[3] in SENTINELS else self.seeds)
        ]

    def overlap_jobs(self) -> list[OverlapJob]:
        pairs = self.config["overlap"]["pairs"]
        return [
            OverlapJob(p["model"], self.final_revision(p["model"]), p["bigram"], p["optimal"], s)
            for p in pairs
            for s in self.seeds
        ]

    def ablation_jobs(self) -> list[MaskJob]:
        """The masks whose ablation and generations are run (at the final checkpoint)."""
        return [
            MaskJob(run["model"], self.final_revision(run["model"]), run["target"], run["lam"], s)
            for run in self.config["ablation"]["runs"]
            for s in self.seeds
        ]

    def lens_jobs(self) -> list[LensJob]:
        settings = self.config["residual_stream"]
        jobs = []
        for run in settings["runs"]:
            model = run["model"]
            every = settings["checkpoints"] == "all"
            revisions = self.revisions(model) if every else [self.final_revision(model)]
            jobs += [LensJob(model, r, run["lam"], s) for r in revisions for s in self.seeds]
        return jobs

    def mask_training_settings(self, model: str, seed: int | str) -> dict[str, Any]:
        """Keyword arguments of `MaskTrainingConfig` for one model and seed, all but λ: the
        shared settings with the model's overrides (micro-batching of large models)."""
        settings = {k: v for k, v in self.config["mask_training"].items() if k != "seeds"}
        overrides = self.models[model].get("mask_training", {})
        return {**settings, **overrides, "seed": int(seed)}

    def mask_training(self, model: str, lam: str, seed: int | str) -> dict[str, Any]:
        """Keyword arguments of `MaskTrainingConfig` for one model, configured λ label and seed."""
        return {**self.mask_training_settings(model, seed), "lam": self.lambda_value(lam)}

    def released_runs(self) -> list[tuple[str, str]]:
        """(model, λ label) of every released mask compared with ours."""
        return [(run["model"], run["lam"]) for run in self.config["released_masks"]["runs"]]

    def released_source(self, model: str, lam: str) -> dict[str, str]:
        """Hub repo and file of a released mask: configured, or the authors' naming."""
        runs = self.config["released_masks"]["runs"]
        run = next(r for r in runs if (r["model"], r["lam"]) == (model, lam))
        return released_source(run, self.models[model])

    def size_matching(self) -> dict[str, Any]:
        """Bisection settings of the size-matched optimal subnetworks."""
        return dict(self.config["optimal_masks"]["size_matched"])
