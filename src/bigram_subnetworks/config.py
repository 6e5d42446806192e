"""The pipeline's configuration, validated, read through its schema.

The JSON schema (`workflow/schemas/config.schema.yaml`) is the one hand-written place a key is
declared, with its description, shape and (for an optional key) default. Two layers, each check
written once:
- the schema checks shape: unknown keys, types, ranges;
- `Config.from_dict` checks meaning: references between sections (λ labels, tokenizers, models,
  pairs, runs) here, and each model's own settings by building the library's typed settings
  (`settings.MaskTrainingConfig`, `ModelShape`, `PretrainConfig`), so their rules are the
  library's.
The validated config is read as `Section`s (``config.corpus.seq_len``), which the schema
shapes: a key it does not declare fails by name. Every problem names its key and value; all of
them are reported at once, before any job runs. Nothing here imports torch: the Snakefile
validates on every invocation."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from .architectures import REGISTRY
from .settings import SENTINELS, MaskTrainingConfig, configs_from_dict

# Label prefix of size-matched optimal subnetworks: `match-10` is the optimal subnetwork whose
# size matches the bigram subnetwork `10` (its λ is found by a search, not configured).
MATCHED_PREFIX = "match-"
TARGETS = ("bigram", "optimal")
TOKENIZER_SOURCES = ("vocab_size", "hub", "model")


class ConfigError(ValueError):
    """A configuration problem, reported before any job runs."""


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _schema_errors(config: Mapping, schema: Mapping[str, Any]) -> list[str]:
    validator = Draft202012Validator(schema)
    return [
        f"{_where(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A schema node with its `$ref` (into `$defs`) followed."""
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def _shaped(schema: Mapping[str, Any], root: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The alternative of a schema node (itself or one of its `anyOf`) that has ``key``
    (`properties` for a mapping, `items` for a list); {} when none does."""
    schema = _resolve(schema, root)
    for option in [schema, *(_resolve(o, root) for o in schema.get("anyOf", ()))]:
        if key in option:
            return option
    return {}


def _default(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """A property's `default` (beside its `$ref`, or in what it refers to); None if none."""
    return schema["default"] if "default" in schema else _resolve(schema, root).get("default")


def _build(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, Mapping):
        return Section(value, _shaped(schema, root, "properties"), root, where)
    if isinstance(value, list | tuple):
        items = _shaped(schema, root, "items").get("items", {})
        return tuple(_build(v, items, root, f"{where}.{i}") for i, v in enumerate(value))
    return value


class Section(Mapping[str, Any]):
    """One mapping of the validated configuration, read-only, its keys also attributes; the
    schema (`workflow/schemas/config.schema.yaml`) is the one place a key is declared. A key the
    schema declares that the config leaves out reads as the schema's `default`, else None; a key
    it does not declare is an AttributeError naming it. Nested mappings are Sections, lists
    tuples (`plain` gives the plain data back)."""

    __slots__ = ("_declared", "_values", "_where")

    def __init__(self, values: Mapping, schema: Mapping, root: Mapping, where: str = "") -> None:
        declared = schema.get("properties", {})
        defaults = {key: _default(node, root) for key, node in declared.items()
                    if key not in values and _default(node, root) is not None}  # fmt: skip
        built = {key: _build(value, declared.get(key, {}), root, f"{where}.{key}".lstrip("."))
                 for key, value in {**values, **defaults}.items()}  # fmt: skip
        object.__setattr__(self, "_values", built)
        object.__setattr__(self, "_declared", set(declared) | set(built))
        object.__setattr__(self, "_where", where or "the configuration")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        if name in self._declared:
            return None
        raise AttributeError(f"{self._where} has no key {name!r} (config.schema.yaml)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the configuration is read-only ({self._where}.{name})")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Section({plain(self)!r})"


def plain(value: Any) -> Any:
    """Sections as dicts and tuples as lists, recursively: what a job's params and the library's
    typed settings take."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# The whole configuration.


def _duplicates(values: Iterable) -> list:
    seen, dups = set(), []
    for value in values:
        if value in seen:
            dups.append(value)
        seen.add(value)
    return dups


class Config:
    """A validated configuration: its sections as `Section`s (``config.corpus.seq_len``), the λ
    grid as a label → value mapping, and the lookups the grid needs. Built by `validate_config`
    (or `Config.from_dict` of a schema-checked mapping)."""

    def __init__(self, config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
        self.values = Section(config, schema, schema)

    def __getattr__(self, name: str) -> Any:
        if name == "values":
            raise AttributeError(name)
        return getattr(self.values, name)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], schema: Mapping[str, Any]) -> Config:
        """The typed configuration; raises `ConfigError` listing every problem of meaning."""
        built = cls(config, schema)
        labels = [item["label"] for item in config["lambdas"]]
        problems = [f"lambdas: duplicate label {dup!r}" for dup in _duplicates(labels)]
        problems += built.problems()
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return built

    # -- lookups -------------------------------------------------------------------------------

    @property
    def lambdas(self) -> dict[str, float]:
        return {item.label: float(item.value) for item in self.values.lambdas}

    @property
    def seeds(self) -> list[int]:
        return list(self.mask_training.seeds)

    @property
    def matched_labels(self) -> list[str]:
        """Labels of the size-matched optimal subnetworks (`match-<bigram label>`)."""
        return [MATCHED_PREFIX + label for label in self.optimal_masks.size_matched.bigram]

    def model(self, name: str) -> Section:
        return next(m for m in self.models if m.name == name)

    def tokenizer(self, name: str) -> Section:
        return next(t for t in self.tokenizers if t.name == name)

    def trained_bigram_labels(self) -> set[str]:
        return set(self.bigram_masks.final) - set(SENTINELS)

    def optimal_labels(self) -> set[str]:
        return set(self.optimal_masks.final) | set(self.matched_labels)

    def mask_settings(self, model: Section) -> dict[str, Any]:
        """The shared training settings (all but the seeds) with the model's overrides
        (micro-batching): `MaskTrainingConfig`'s keyword arguments but λ and the seed."""
        shared = {k: v for k, v in plain(self.mask_training).items() if k != "seeds"}
        return {**shared, **plain(model.mask_training)}

    def overlap_null(self) -> dict[str, Any]:
        """The permutation-null settings of `overlap.overlap_summary`."""
        return {key: self.overlap[key] for key in ("null_model", "permutations", "seed")}

    # -- checks of meaning ---------------------------------------------------------------------

    def problems(self) -> list[str]:
        problems = self._corpus_problems()
        for section, names in (
            ("models", [m.name for m in self.models]),
            ("tokenizers", [t.name for t in self.tokenizers]),
        ):
            problems += [f"{section}: duplicate name {dup!r}" for dup in _duplicates(names)]
        problems += self._tokenizer_problems()
        for i, model in enumerate(self.models):
            problems += self._model_problems(i, model)
        problems += self._label_problems()
        problems += self._reference_problems()
        return problems

    def _corpus_problems(self) -> list[str]:
        problems = []
        if self.corpus.source == "local" and not self.corpus.local_paths:
            problems.append("corpus.local_paths: empty, but corpus.source is 'local'")
        directory = Path(self.corpus.offline_english.directory)
        if not directory.is_absolute() and directory.parts[:1] == ("results",):
            problems.append(
                f"corpus.offline_english.directory: {directory} is under results/, which "
                "`make clean` deletes: keep downloads under resources/"
            )
        return problems

    def _tokenizer_problems(self) -> list[str]:
        problems = []
        hub_models = {m.name for m in self.models if m.hub is not None}
        for i, tokenizer in enumerate(self.tokenizers):
            where = f"tokenizers.{i} ({tokenizer.name})"
            given = [getattr(tokenizer, key) is not None for key in TOKENIZER_SOURCES]
            if sum(given) != 1:
                problems.append(
                    f"{where}: give exactly one of `vocab_size` (a BPE trained here), `hub` (a "
                    "hub repository's tokenizer) or `model` (a hub model's own tokenizer)"
                )
            if tokenizer.model is not None and tokenizer.model not in hub_models:
                problems.append(f"{where}.model: {tokenizer.model!r} is not a hub model in models")
        return problems

    def _model_problems(self, i: int, model: Section) -> list[str]:
        where = f"models.{i} ({model.name})"
        problems = []
        if model.tokenizer not in {t.name for t in self.tokenizers}:
            problems.append(f"{where}.tokenizer: {model.tokenizer!r} is not in tokenizers")
        if (model.pretrain is None) == (model.hub is None):
            problems.append(
                f"{where}: give exactly one of `pretrain` (train it here) or `hub` (a hub id or "
                "local directory, with revisions)"
            )
        if model.arch is not None and model.arch not in REGISTRY:
            problems.append(
                f"{where}.arch: {model.arch!r} is not a supported architecture family "
                f"(one of {', '.join(REGISTRY)})"
            )
        try:  # the library's own rules for the model's training settings
            MaskTrainingConfig(lam=0.0, **self.mask_settings(model))
        except ValueError as error:
            problems.append(f"{where}.mask_training: {error}")
        if model.hub is not None:
            problems += self._hub_problems(where, model.hub)
        if model.pretrain is not None:
            problems += self._pretrain_problems(where, model)
        return problems

    @staticmethod
    def _hub_problems(where: str, hub: Section) -> list[str]:
        problems = []
        if (hub.id is None) == (hub.package is None):
            problems.append(
                f"{where}.hub: give exactly one of `id` (a hub repository or local directory) "
                "or `package` (an installed Python package that ships the weights)"
            )
        if hub.package is not None and hub.gguf_file is None:
            problems.append(f"{where}.hub.gguf_file: a `package` source names the file it ships")
        if hub.package is not None and len(hub.revisions) != 1:
            problems.append(f"{where}.hub.revisions: a `package` source has one revision")
        return problems

    def _pretrain_problems(self, where: str, model: Section) -> list[str]:
        if model.arch is None:
            return [f"{where}.arch: a model pretrained here needs its family (`arch`)"]
        problems = []
        try:  # the library's own rules for a model's shape and pretraining run
            shape, _ = configs_from_dict(model.arch, plain(model.pretrain))
        except ValueError as error:
            return [f"{where}.pretrain: {error}"]
        if shape.max_positions < self.corpus.seq_len:
            problems.append(
                f"{where}.pretrain.max_positions: {shape.max_positions} < corpus.seq_len "
                f"{self.corpus.seq_len}"
            )
        return problems

    def _label_problems(self) -> list[str]:
        """λ labels used by the mask grids must be defined, and the reserved ones unused."""
        problems = []
        labels = set(self.lambdas)
        for reserved in SENTINELS:
            if reserved in labels:
                problems.append(f"lambdas: the label {reserved!r} is reserved for λ = ±∞")
        for label in sorted(labels):
            if label.startswith(MATCHED_PREFIX):
                problems.append(f"lambdas: the prefix {MATCHED_PREFIX!r} of {label!r} is reserved")
        for which in ("final", "intermediate"):
            for label in getattr(self.bigram_masks, which):
                if label not in labels and label not in SENTINELS:
                    problems.append(f"bigram_masks.{which}: λ label {label!r} is not in lambdas")
        optimal = self.optimal_masks
        for label in optimal.final:
            if label in SENTINELS:
                problems.append(
                    f"optimal_masks.final: {label!r} does not depend on the target; "
                    "it is in bigram_masks already"
                )
            elif label not in labels:
                problems.append(f"optimal_masks.final: λ label {label!r} is not in lambdas")
        for label in optimal.size_matched.bigram:
            if label in SENTINELS or label not in self.bigram_masks.final:
                problems.append(
                    f"optimal_masks.size_matched.bigram: {label!r} is not a trained λ label of "
                    "bigram_masks.final"
                )
        low, high = optimal.size_matched.bracket
        if low >= high:
            problems.append(f"optimal_masks.size_matched.bracket: {[low, high]} must be increasing")
        return problems

    def _reference_problems(self) -> list[str]:
        """Optimal models, overlap pairs, ablation, residual-stream and released-mask runs must
        name models and masks the grid trains."""
        models = {m.name for m in self.models}
        problems = [
            f"optimal_masks.models: {m!r} is not in models"
            for m in self.optimal_masks.models
            if m not in models
        ]
        trained = {"bigram": self.trained_bigram_labels(), "optimal": self.optimal_labels()}
        problems += self._pair_problems(models, trained)
        problems += self._ablation_problems(models, trained)
        problems += self._lens_problems(models, trained["bigram"])
        problems += self._released_problems(models, trained["bigram"])
        return problems

    def _pair_problems(self, models: set[str], trained: Mapping[str, set[str]]) -> list[str]:
        problems = []
        for i, pair in enumerate(self.overlap.pairs):
            where = f"overlap.pairs.{i}"
            if pair.model not in models:
                problems.append(f"{where}.model: {pair.model!r} is not in models")
            elif pair.model not in self.optimal_masks.models:
                problems.append(f"{where}.model: {pair.model!r} is not in optimal_masks.models")
            if pair.bigram not in trained["bigram"]:
                problems.append(f"{where}.bigram: {pair.bigram!r} is not a trained bigram λ label")
            if pair.optimal not in trained["optimal"]:
                problems.append(
                    f"{where}.optimal: {pair.optimal!r} is not an optimal λ label "
                    f"(one of {sorted(trained['optimal'])})"
                )
        return problems

    def _ablation_problems(self, models: set[str], trained: Mapping[str, set[str]]) -> list[str]:
        problems = []
        for i, run in enumerate(self.ablation.runs):
            where = f"ablation.runs.{i}"
            if run.model not in models:
                problems.append(f"{where}.model: {run.model!r} is not in models")
            elif run.target == "optimal" and run.model not in self.optimal_masks.models:
                problems.append(f"{where}.model: {run.model!r} is not in optimal_masks.models")
            if run.lam not in trained[run.target]:
                problems.append(
                    f"{where}.lam: {run.lam!r} is not a trained {run.target} λ label "
                    "at the final checkpoint"
                )
        return problems

    def _lens_problems(self, models: set[str], bigram_labels: set[str]) -> list[str]:
        problems = []
        residual = self.residual_stream
        for i, run in enumerate(residual.runs):
            where = f"residual_stream.runs.{i}"
            if run.model not in models:
                problems.append(f"{where}.model: {run.model!r} is not in models")
            if run.lam not in bigram_labels:
                problems.append(f"{where}.lam: {run.lam!r} is not a trained bigram λ label")
            elif residual.checkpoints == "all" and run.lam not in self.bigram_masks.intermediate:
                problems.append(
                    f"{where}.lam: {run.lam!r} is not in bigram_masks.intermediate, but "
                    "residual_stream.checkpoints is 'all'"
                )
        return problems

    def _released_problems(self, models: set[str], bigram_labels: set[str]) -> list[str]:
        problems = []
        for i, run in enumerate(self.released_masks.runs):
            where = f"released_masks.runs.{i}"
            if run.model not in models:
                problems.append(f"{where}.model: {run.model!r} is not in models")
                continue
            if run.lam not in bigram_labels:
                problems.append(f"{where}.lam: {run.lam!r} is not a trained bigram λ label")
            try:
                released_source(run, self.model(run.model))
            except ValueError as error:
                problems.append(f"{where}: {error}")
        return problems


def released_source(run: Section, model: Section) -> dict[str, str]:
    """Hub repo and file of a released-mask run: configured (`repo`, `filename`), else the
    authors' naming for the model's hub id and λ. A ValueError names what is missing."""
    if run.repo is not None and run.filename is not None:
        return {"repo_id": run.repo, "filename": run.filename}
    if model.hub is None or model.hub.id is None:
        raise ValueError(f"{model.name!r} is not a hub model; give repo and filename")
    from .released import released_file  # a lower tier (docs/architecture.md): imported here

    repo_id, filename = released_file(model.hub.id, run.lam)
    return {"repo_id": run.repo or repo_id, "filename": run.filename or filename}


def validate_config(config: Mapping[str, Any], schema_path: str | Path) -> Config:
    """The typed configuration; raises `ConfigError` listing every problem, each naming its key
    and value: the schema's first, then (if the shape is right) those of meaning."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = _schema_errors(config, schema)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return Config.from_dict(config, schema)


def override_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of a config stated over config.yaml (`--configfile`, which Snakemake merges
    over it): the same schema with every `required` keyword outside list items dropped, so that
    a file stating only some keys passes an editor's check (the merged config is validated
    against the full schema). Property names are never dropped (a property may be called
    `required`), and literal values (enum, const, default, examples) are copied as they are.
    `make install` writes it (`write_override_schema`)."""
    name_maps = ("properties", "patternProperties", "$defs", "dependentSchemas")
    literals = ("enum", "const", "default", "examples")

    def strip(node: Any, in_list_item: bool = False) -> Any:
        if isinstance(node, list):
            return [strip(item, in_list_item) for item in node]
        if not isinstance(node, Mapping):
            return node
        stripped = {}
        for key, value in node.items():
            if key == "required" and not in_list_item:
                continue
            # A list in an override replaces the default's whole list, so each item must still
            # be complete: `required` stays at and below `items`, and in `$defs`, which only
            # list items refer to (a model's `pretrain`).
            keep = in_list_item or key in ("items", "$defs")
            if key in name_maps and isinstance(value, Mapping):
                stripped[key] = {name: strip(sub, keep) for name, sub in value.items()}
            elif key in literals:
                stripped[key] = copy.deepcopy(value)
            else:
                stripped[key] = strip(value, keep)
        return stripped

    return strip(schema)


def write_override_schema(schema_path: str | Path, path: str | Path) -> None:
    """Write `override_schema` of the schema at ``schema_path`` to ``path`` (YAML), the file the
    alternative configs name on their first line for editors. Generated by `make install`, never
    committed: the schema is the one hand-written source."""
    schema = override_schema(yaml.safe_load(Path(schema_path).read_text()))
    header = (
        f"# Generated from {Path(schema_path).name} by `make install` (config.override_schema):\n"
        "# the schema editors check configs stated over config.yaml against. Do not edit.\n"
    )
    Path(path).write_text(header + yaml.safe_dump(schema, sort_keys=False, allow_unicode=True))


def load_config(
    path: str | Path, schema_path: str | Path, base: str | Path | None = None
) -> Config:
    """The validated configuration of a YAML file; with ``base`` (config.yaml), of the file
    merged over it as Snakemake merges `--configfile path` (`snakemake.utils.update_config`)."""
    config = yaml.safe_load(Path(path).read_text())
    if base is not None:
        from snakemake.utils import update_config  # the merge Snakemake itself does

        merged = yaml.safe_load(Path(base).read_text())
        update_config(merged, config)
        config = merged
    return validate_config(config, schema_path)
