"""The experiment grid of a validated configuration: which masks, overlaps, ablations and
residual-stream analyses the workflow runs, and where each model revision lives.

The Snakefile asks everything it needs to know here, so the grid is testable without Snakemake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import paths
from .architectures import maskable_parameters
from .config import SENTINELS, Config, ConfigError, Section, plain, released_source


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
    bigram_lam: str
    optimal_lam: str
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

    def __init__(self, config: Config) -> None:
        self.config = config
        self.models: dict[str, Section] = {m.name: m for m in config.models}
        self.tokenizers = {t.name: t for t in config.tokenizers}
        self.lambdas = dict(config.lambdas)
        self.seeds = config.seeds
        self.matched_labels = config.matched_labels
        # Families of hub models configured without `arch`, read from their checkpoints.
        self.inferred_archs: dict[str, str] = {}

    def lambda_value(self, label: str) -> float:
        """λ of a configured or sentinel label (size-matched labels have no configured λ)."""
        return SENTINELS[label] if label in SENTINELS else self.lambdas[label]

    # -- models and tokenizers -----------------------------------------------------------------

    def revisions(self, model: str) -> list[str]:
        """Checkpoints in training order: `step{N}` of a model pretrained here, or the configured
        hub revisions; the last is the final one."""
        entry = self.models[model]
        if entry.hub is not None:
            return list(entry.hub.revisions)
        return [f"step{step}" for step in entry.pretrain["checkpoints"]]

    def final_revision(self, model: str) -> str:
        return self.revisions(model)[-1]

    def is_hub_model(self, model: str) -> bool:
        return self.models[model].hub is not None

    def pretrained_models(self) -> list[str]:
        """Models pretrained in the pipeline (not from the hub), in config order."""
        return [name for name in self.models if not self.is_hub_model(name)]

    def hub_models(self) -> list[str]:
        """Models taken from the hub (or a local directory or a package), in config order."""
        return [name for name in self.models if self.is_hub_model(name)]

    def model_directory(self, model: str, revision: str) -> str:
        """Where the loadable model of one revision lives (`save_pretrained` layout)."""
        template = paths.SNAPSHOT if self.is_hub_model(model) else paths.CHECKPOINT
        return template.format(model=model, revision=revision)

    def arch(self, model: str) -> str:
        """The model's family: configured, or inferred from its checkpoint
        (`check_hub_families`, run when the DAG is built)."""
        arch = self.models[model].arch or self.inferred_archs.get(model)
        if arch is None:
            raise ConfigError(f"models: the family of {model!r} is not known yet")
        return arch

    def check_hub_families(self) -> None:
        """Check every hub model's configured family against its checkpoint's `model_type`
        (or infer it when `arch` is absent), from metadata alone, before any job runs
        (`hub.check_families`); a problem is a `ConfigError` naming the model."""
        from .hub import check_families

        hub_models = {
            name: {"hub": plain(self.models[name].hub), "arch": self.models[name].arch}
            for name in self.hub_models()
        }
        finals = {name: self.final_revision(name) for name in hub_models}
        snapshots = {name: self.model_directory(name, finals[name]) for name in hub_models}
        try:
            self.inferred_archs = check_families(hub_models, finals, snapshots)
        except ValueError as error:
            raise ConfigError(f"invalid configuration:\n  models: {error}") from error

    def tokenizer_of(self, model: str) -> str:
        return self.models[model].tokenizer

    def hub_tokenizers(self) -> list[str]:
        """Tokenizers taken from elsewhere: a hub repository's, or a hub model's own."""
        return [name for name, tok in self.tokenizers.items() if tok.vocab_size is None]

    def trained_tokenizers(self) -> list[str]:
        return [name for name, tok in self.tokenizers.items() if tok.vocab_size is not None]

    def tokenizer_directory(self, tokenizer: str) -> str:
        trained = self.tokenizers[tokenizer].vocab_size is not None
        template = paths.TOKENIZER if trained else paths.HUB_TOKENIZER
        return template.format(tokenizer=tokenizer)

    def tokenizer_source(self, tokenizer: str) -> dict[str, str]:
        """Hub id (or local directory) and revision of a tokenizer taken from elsewhere: its
        configured repository, or the final snapshot of the model it belongs to."""
        entry = self.tokenizers[tokenizer]
        if entry.model is not None:
            revision = self.final_revision(entry.model)
            return {"id": self.model_directory(entry.model, revision), "revision": revision}
        return plain(entry.hub)

    def resources(self, model: str, name: str, default: int) -> int:
        return self.models[model].resources.get(name, default)

    def evaluation(self, model: str) -> dict[str, Any]:
        """The evaluation settings with the model's overrides (e.g. a smaller batch)."""
        return {**plain(self.config.evaluation), **plain(self.models[model].evaluation)}

    # -- the grid ------------------------------------------------------------------------------

    def mask_jobs(self) -> list[MaskJob]:
        """Every mask of the grid: bigram masks at every checkpoint, optimal ones (configured λ,
        then size-matched) at the final checkpoint of their models; each for every seed, except
        the sentinels, which do not depend on it (first seed only)."""
        cells = []
        masks = self.config.bigram_masks
        for model in self.models:
            final = self.final_revision(model)
            for revision in self.revisions(model):
                labels = masks.final if revision == final else masks.intermediate
                cells += [(model, revision, "bigram", lam) for lam in labels]
        optimal = self.config.optimal_masks
        for model in optimal.models:
            labels = [*optimal.final, *self.matched_labels]
            cells += [(model, self.final_revision(model), "optimal", lam) for lam in labels]
        return [
            MaskJob(*cell, seed)
            for cell in cells
            for seed in (self.seeds[:1] if cell[3] in SENTINELS else self.seeds)
        ]

    def overlap_jobs(self) -> list[OverlapJob]:
        return [
            OverlapJob(p.model, self.final_revision(p.model), p.bigram, p.optimal, s)
            for p in self.config.overlap.pairs
            for s in self.seeds
        ]

    def ablation_jobs(self) -> list[MaskJob]:
        """The masks whose ablation and generations are run (at the final checkpoint)."""
        return [
            MaskJob(run.model, self.final_revision(run.model), run.target, run.lam, s)
            for run in self.config.ablation.runs
            for s in self.seeds
        ]

    def lens_jobs(self) -> list[LensJob]:
        settings = self.config.residual_stream
        jobs = []
        for run in settings.runs:
            every = settings.checkpoints == "all"
            revisions = self.revisions(run.model) if every else [self.final_revision(run.model)]
            jobs += [LensJob(run.model, r, run.lam, s) for r in revisions for s in self.seeds]
        return jobs

    def mask_training_settings(self, model: str, seed: int | str) -> dict[str, Any]:
        """Keyword arguments of `MaskTrainingConfig` for one model and seed, all but λ: the
        shared settings with the model's overrides (micro-batching of large models)."""
        return {**self.config.mask_settings(self.models[model]), "seed": int(seed)}

    def mask_training(self, model: str, lam: str, seed: int | str) -> dict[str, Any]:
        """Keyword arguments of `MaskTrainingConfig` for one model, configured λ label and seed."""
        return {**self.mask_training_settings(model, seed), "lam": self.lambda_value(lam)}

    def released_runs(self) -> list[tuple[str, str]]:
        """(model, λ label) of every released mask compared with ours."""
        return [(run.model, run.lam) for run in self.config.released_masks.runs]

    def released_source(self, model: str, lam: str) -> dict[str, str]:
        """Hub repo and file of a released mask: configured, or the authors' naming."""
        runs = self.config.released_masks.runs
        run = next(r for r in runs if (r.model, r.lam) == (model, lam))
        return released_source(run, self.models[model])

    def analyses(self) -> dict[str, bool]:
        """Whether each optional analysis has anything to run. A section left empty (no overlap
        pairs, ablation runs, residual-stream runs or released masks; no optimal masks; no mask
        below the final checkpoint) drops its jobs, tables and figures, and the report says so."""
        final = {model: self.final_revision(model) for model in self.models}
        return {
            "optimal_masks": any(job.target == "optimal" for job in self.mask_jobs()),
            "dynamics": any(job.revision != final[job.model] for job in self.mask_jobs()),
            "overlap": bool(self.config.overlap.pairs),
            "ablation": bool(self.config.ablation.runs),
            "residual_stream": bool(self.config.residual_stream.runs),
            "released_masks": bool(self.config.released_masks.runs),
        }

    def size_matching(self) -> dict[str, Any]:
        """Search settings of the size-matched optimal subnetworks."""
        return plain(self.config.optimal_masks.size_matched)


@dataclass(frozen=True)
class ModelSize:
    """What a model's artifacts weigh: parameters as stored in its snapshot (``bytes`` each,
    e.g. 2 for fp16 hub weights, 4 for fp32) and maskable weights (one byte each in a mask)."""

    parameters: int
    maskable: int
    bytes: int = 4

    @classmethod
    def of(cls, model, bytes: int = 4) -> ModelSize:
        """The sizes of a Hugging Face model; one built on the meta device from its config
        (``with torch.device("meta")``) needs no weights."""
        parameters = sum(p.numel() for p in model.parameters())  # tied weights once
        maskable = sum(w.numel() for w in maskable_parameters(model).values())
        return cls(parameters, maskable, bytes)


def storage_estimate(grid: Grid, sizes: dict[str, ModelSize]) -> dict[str, float]:
    """GB on disk of a run's largest artifacts, from its grid: model snapshots (every revision;
    a downloaded model's files are hard links into the Hugging Face cache, so counted once),
    masks (one bit per maskable weight, ``mask.safetensors`` as `Mask.save` packs it), and the
    token arrays (uint16 or uint32 per token of every sequence kept; an upper bound from the
    configured caps)."""
    snapshots = sum(
        sizes[m].parameters * sizes[m].bytes * len(grid.revisions(m)) for m in grid.models
    )
    masks = sum(sizes[job.model].maskable for job in grid.mask_jobs()) / 8
    corpus = grid.config.corpus
    sequences = [corpus.bigram_sequences or corpus.train_sequences or 0, corpus.eval_sequences or 0]
    tokens = 2 * corpus.seq_len * sum(sequences) * len(grid.tokenizers)  # ≤ 2 bytes under 65,536
    return {
        "snapshots_gb": snapshots / 1e9,
        "masks_gb": masks / 1e9,
        "tokens_gb": tokens / 1e9,
        "total_gb": (snapshots + masks + tokens) / 1e9,
    }
