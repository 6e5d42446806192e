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

# λ labels with no training: keep every maskable weight (λ = −∞) or none (λ = +∞).
SENTINELS = {"full": -math.inf, "empty": math.inf}


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


def _model_errors(i: int, model: Mapping, tokenizers: set, seq_len: int) -> list[str]:
    where = f"models.{i} ({model['name']})"
    errors = []
    if model["tokenizer"] not in tokenizers:
        errors.append(f"{where}.tokenizer: {model['tokenizer']!r} is not in tokenizers")
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
    if pre["max_positions"] < seq_len:
        errors.append(
            f"{where}.pretrain.max_positions: {pre['max_positions']} < corpus.seq_len {seq_len}"
        )
    return errors


def _cross_errors(config: Mapping) -> list[str]:
    errors = []
    for section, key in (("models", "name"), ("tokenizers", "name"), ("lambdas", "label")):
        for dup in _duplicates(item[key] for item in config[section]):
            errors.append(f"{section}: duplicate {key} {dup!r}")
    labels = {item["label"] for item in config["lambdas"]}
    for reserved in SENTINELS:
        if reserved in labels:
            errors.append(f"lambdas: the label {reserved!r} is reserved for λ = ±∞")
    for which in ("final", "intermediate"):
        for label in config["bigram_masks"][which]:
            if label not in labels and label not in SENTINELS:
                errors.append(f"bigram_masks.{which}: λ label {label!r} is not in lambdas")
    tokenizers = {t["name"] for t in config["tokenizers"]}
    for i, model in enumerate(config["models"]):
        errors += _model_errors(i, model, tokenizers, config["corpus"]["seq_len"])
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


class Grid:
    """Lookups and the experiment grid of a validated configuration."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.models = {m["name"]: m for m in config["models"]}
        self.tokenizers = {t["name"]: t for t in config["tokenizers"]}
        self.lambdas = {item["label"]: float(item["value"]) for item in config["lambdas"]}

    def lambda_value(self, label: str) -> float:
        return SENTINELS[label] if label in SENTINELS else self.lambdas[label]

    def revisions(self, model: str) -> list[str]:
        return [f"step{step}" for step in self.models[model]["pretrain"]["checkpoints"]]

    def final_revision(self, model: str) -> str:
        return self.revisions(model)[-1]

    def tokenizer_of(self, model: str) -> str:
        return self.models[model]["tokenizer"]

    def mask_jobs(self) -> list[MaskJob]:
        jobs = []
        masks = self.config["bigram_masks"]
        for model in self.models:
            final = self.final_revision(model)
            for revision in self.revisions(model):
                labels = masks["final"] if revision == final else masks["intermediate"]
                jobs += [MaskJob(model, revision, "bigram", lam) for lam in labels]
        return jobs

    def mask_training(self, lam: str) -> dict[str, Any]:
        """Keyword arguments of `MaskTrainingConfig` for one λ label."""
        return {**self.config["mask_training"], "lam": self.lambda_value(lam)}
