"""The pipeline's configuration, validated and typed: one frozen object per section.

Two layers, each check written once:
- the JSON schema (`workflow/schemas/config.schema.yaml`) checks shape: unknown keys, types,
  ranges, with a description of every key;
- `Config.from_dict` builds the typed sections and checks meaning: references between sections
  (λ labels, tokenizers, models, pairs, runs) here, and each model's own settings by building the
  library's typed settings (`settings.MaskTrainingConfig`, `ModelShape`, `PretrainConfig`), so
  their rules are the library's.
Every problem names its key and value; all of them are reported at once, before any job runs.
Nothing here imports torch: the Snakefile validates on every invocation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
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


def _make(cls, values: Mapping[str, Any]):
    """A section dataclass from its (schema-checked) mapping; lists become tuples."""
    known = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known}
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# Sections.


@dataclass(frozen=True)
class HuggingFace:
    home: str | None  # HF_HOME of every job; None keeps the environment's


@dataclass(frozen=True)
class DatasetSource:
    """A `datasets` dataset (OSCAR, C4, FineWeb, or a local dataset directory)."""

    name: str
    config: str | None
    split: str
    text_field: str
    revision: str | None
    data_files: str | tuple[str, ...] | None
    max_documents: int


@dataclass(frozen=True)
class OfflineEnglish:
    """The offline English corpus (`english`): where its package files are kept, which texts."""

    directory: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    source: str  # python_docs, offline_english, local, huggingface
    local_paths: tuple[str, ...]
    huggingface: DatasetSource
    offline_english: OfflineEnglish
    seq_len: int
    eval_fraction: float
    split_seed: int
    train_sequences: int | None
    bigram_sequences: int | None
    eval_sequences: int | None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Corpus:
        return _make(
            cls,
            {
                **values,
                "huggingface": _make(DatasetSource, values["huggingface"]),
                "offline_english": _make(OfflineEnglish, values["offline_english"]),
            },
        )

    def problems(self) -> list[str]:
        problems = []
        if self.source == "local" and not self.local_paths:
            problems.append("corpus.local_paths: empty, but corpus.source is 'local'")
        directory = Path(self.offline_english.directory)
        if not directory.is_absolute() and directory.parts[:1] == ("results",):
            problems.append(
                f"corpus.offline_english.directory: {directory} is under results/, which "
                "`make clean` deletes: keep downloads under resources/"
            )
        return problems


@dataclass(frozen=True)
class Tokenizer:
    """A BPE trained here (`vocab_size`), a hub repository's (`hub`), or a hub model's own
    (`model`)."""

    name: str
    vocab_size: int | None = None
    hub: Mapping[str, str] | None = None
    model: str | None = None

    @property
    def trained(self) -> bool:
        return self.vocab_size is not None


@dataclass(frozen=True)
class HubSource:
    """Where a hub model comes from: a hub repository or local directory (`id`), or an installed
    package (`package`); optionally a GGUF file; its revisions, the last the final one."""

    id: str | None = None
    package: str | None = None
    gguf_file: str | None = None
    revisions: tuple[str, ...] = DEFAULT_REVISIONS

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


@dataclass(frozen=True)
class Model:
    """A model: pretrained here (`pretrain`, its raw settings) or from the hub (`hub`); its
    family (`arch`, inferred for hub models when absent); per-model resources and overrides."""

    name: str
    tokenizer: str
    arch: str | None = None
    pretrain: Mapping[str, Any] | None = None
    hub: HubSource | None = None
    resources: Mapping[str, int] = field(default_factory=dict)
    mask_training: Mapping[str, int] = field(default_factory=dict)
    evaluation: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Model:
        hub = values.get("hub")
        return _make(cls, {**values, "hub": _make(HubSource, hub) if hub else None})


@dataclass(frozen=True)
class BigramMasks:
    final: tuple[str, ...]  # λ labels trained at each model's final checkpoint
    intermediate: tuple[str, ...]  # and at every earlier one


@dataclass(frozen=True)
class SizeMatching:
    bigram: tuple[str, ...]  # bigram λ labels whose sizes optimal subnetworks are matched to
    tolerance: float
    max_iterations: int
    bracket: tuple[float, float]


@dataclass(frozen=True)
class OptimalMasks:
    models: tuple[str, ...]
    final: tuple[str, ...]
    size_matched: SizeMatching

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> OptimalMasks:
        return _make(cls, {**values, "size_matched": _make(SizeMatching, values["size_matched"])})

    @property
    def matched_labels(self) -> list[str]:
        return [MATCHED_PREFIX + label for label in self.size_matched.bigram]


@dataclass(frozen=True)
class MaskTraining:
    """The training settings shared by every mask (`settings.MaskTrainingConfig` but λ and the
    seed), and the seeds: one mask per seed."""

    values: Mapping[str, Any]
    seeds: tuple[int, ...]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MaskTraining:
        values = dict(values)
        return cls(values, tuple(values.pop("seeds")))


@dataclass(frozen=True)
class Resume:
    pretrain_every: int  # steps between snapshots (0: none)
    mask_every: int


@dataclass(frozen=True)
class Evaluation:
    batch_size: int
    max_sequences: int | None


@dataclass(frozen=True)
class OverlapPair:
    model: str
    bigram: str  # a trained bigram λ label
    optimal: str  # an optimal λ label, or match-<label>


@dataclass(frozen=True)
class Overlap:
    pairs: tuple[OverlapPair, ...]
    null_model: str  # rows (the paper's) or entries
    permutations: int
    seed: int

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Overlap:
        pairs = tuple(_make(OverlapPair, pair) for pair in values["pairs"])
        return _make(cls, {**values, "pairs": pairs})

    def null(self) -> dict[str, Any]:
        """The permutation-null settings of `overlap.overlap_summary`."""
        return {"null_model": self.null_model, "permutations": self.permutations,
                "seed": self.seed}  # fmt: skip


@dataclass(frozen=True)
class Generation:
    prompt: str
    temperature: float
    max_new_tokens: int
    samples: int


@dataclass(frozen=True)
class AblationRun:
    model: str
    target: str
    lam: str


@dataclass(frozen=True)
class DoseResponse:
    points: int  # removal sizes, log-spaced up to the subnetwork's size
    min_fraction: float  # the smallest, as a fraction of the maskable weights


@dataclass(frozen=True)
class Ablation:
    runs: tuple[AblationRun, ...]
    random_seed: int
    eval_sequences: int | None  # None: evaluation.max_sequences
    dose_response: DoseResponse
    generation: Generation

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Ablation:
        runs = tuple(_make(AblationRun, run) for run in values["runs"])
        return _make(
            cls,
            {
                **values,
                "runs": runs,
                "dose_response": _make(DoseResponse, values["dose_response"]),
                "generation": _make(Generation, values["generation"]),
            },
        )


@dataclass(frozen=True)
class LensRun:
    model: str
    lam: str


@dataclass(frozen=True)
class ResidualStream:
    runs: tuple[LensRun, ...]
    checkpoints: str  # final or all
    fit_sequences: int
    eval_sequences: int
    max_tokens: int | None
    ridge_alpha: float
    random_seed: int
    batch_size: int

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ResidualStream:
        return _make(cls, {**values, "runs": tuple(_make(LensRun, run) for run in values["runs"])})


@dataclass(frozen=True)
class ReleasedRun:
    model: str
    lam: str
    repo: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class ReleasedMasks:
    runs: tuple[ReleasedRun, ...]


# ---------------------------------------------------------------------------------------------
# The whole configuration.


def _duplicates(values: Iterable) -> list:
    seen, dups = set(), []
    for value in values:
        if value in seen:
            dups.append(value)
        seen.add(value)
    return dups


@dataclass(frozen=True)
class Config:
    """A validated configuration: `Config.from_dict` of a schema-checked mapping."""

    huggingface: HuggingFace
    corpus: Corpus
    tokenizers: tuple[Tokenizer, ...]
    models: tuple[Model, ...]
    lambdas: Mapping[str, float]
    bigram_masks: BigramMasks
    optimal_masks: OptimalMasks
    mask_training: MaskTraining
    resume: Resume
    evaluation: Evaluation
    overlap: Overlap
    ablation: Ablation
    residual_stream: ResidualStream
    released_masks: ReleasedMasks

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Config:
        """The typed configuration; raises `ConfigError` listing every problem of meaning."""
        labels = [item["label"] for item in config["lambdas"]]
        built = cls(
            huggingface=_make(HuggingFace, config["huggingface"]),
            corpus=Corpus.from_dict(config["corpus"]),
            tokenizers=tuple(_make(Tokenizer, t) for t in config["tokenizers"]),
            models=tuple(Model.from_dict(m) for m in config["models"]),
            lambdas={item["label"]: float(item["value"]) for item in config["lambdas"]},
            bigram_masks=_make(BigramMasks, config["bigram_masks"]),
            optimal_masks=OptimalMasks.from_dict(config["optimal_masks"]),
            mask_training=MaskTraining.from_dict(config["mask_training"]),
            resume=_make(Resume, config["resume"]),
            evaluation=_make(Evaluation, config["evaluation"]),
            overlap=Overlap.from_dict(config["overlap"]),
            ablation=Ablation.from_dict(config["ablation"]),
            residual_stream=ResidualStream.from_dict(config["residual_stream"]),
            released_masks=ReleasedMasks(
                tuple(_make(ReleasedRun, run) for run in config["released_masks"]["runs"])
            ),
        )
        problems = [f"lambdas: duplicate label {dup!r}" for dup in _duplicates(labels)]
        problems += built.problems()
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return built

    # -- lookups -------------------------------------------------------------------------------

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)

    def tokenizer(self, name: str) -> Tokenizer:
        return next(t for t in self.tokenizers if t.name == name)

    def trained_bigram_labels(self) -> set[str]:
        return set(self.bigram_masks.final) - set(SENTINELS)

    def optimal_labels(self) -> set[str]:
        return set(self.optimal_masks.final) | set(self.optimal_masks.matched_labels)

    def mask_settings(self, model: Model) -> dict[str, Any]:
        """The shared training settings with the model's overrides (micro-batching)."""
        return {**self.mask_training.values, **model.mask_training}

    # -- checks of meaning ---------------------------------------------------------------------

    def problems(self) -> list[str]:
        problems = self.corpus.problems()
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

    def _model_problems(self, i: int, model: Model) -> list[str]:
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
    def _hub_problems(where: str, hub: HubSource) -> list[str]:
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

    def _pretrain_problems(self, where: str, model: Model) -> list[str]:
        if model.arch is None:
            return [f"{where}.arch: a model pretrained here needs its family (`arch`)"]
        problems = []
        try:  # the library's own rules for a model's shape and pretraining run
            shape, _ = configs_from_dict(model.arch, model.pretrain)
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


def released_source(run: ReleasedRun, model: Model) -> dict[str, str]:
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
    errors = _schema_errors(config, Path(schema_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return Config.from_dict(config)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` exactly as Snakemake merges a --configfile over the
    workflow's configfile (`snakemake.utils.update_config`): mappings key by key, recursively;
    anything else (lists, scalars, null) replaced whole. A non-empty mapping replaces a
    non-mapping; an empty one leaves it. Neither argument is modified."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if not isinstance(value, Mapping):
            merged[key] = copy.deepcopy(value)
        elif isinstance(merged.get(key, {}), Mapping):
            merged[key] = merge(merged.get(key, {}), value)
        elif value:
            merged[key] = merge({}, value)
    return merged


def override_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of a config stated over config.yaml (`--configfile`, merged by `merge`): the
    same schema with every `required` keyword outside list items dropped, so that a file
    stating only some keys passes an editor's check (the merged config is validated against the
    full schema). Property names are never dropped (a property may be called `required`), and
    literal values (enum, const, default, examples) are copied as they are. The committed
    `config.override.schema.yaml` is this of `config.schema.yaml` (tests/test_config.py)."""
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


def load_config(
    path: str | Path, schema_path: str | Path, base: str | Path | None = None
) -> Config:
    """The validated configuration of a YAML file; with ``base`` (config.yaml), of the file
    merged over it as Snakemake merges `--configfile path` (`merge`)."""
    config = yaml.safe_load(Path(path).read_text())
    if base is not None:
        config = merge(yaml.safe_load(Path(base).read_text()), config)
    return validate_config(config, schema_path)
