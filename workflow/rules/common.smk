# Validation, wildcard constraints and every input function: rule files hold rules only.
import re

from bigram_subnetworks import __version__
from bigram_subnetworks.config import SENTINELS, TARGETS, Grid, validate_config

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
GRID = Grid(config)
MASK_JOBS = GRID.mask_jobs()
MASK_DIR = "results/masks/{model}/{revision}/{target}/lam-{lam}/seed-{seed}"
OVERLAP_DIR = "results/overlap/{model}/{revision}/bigram-{bigram}/optimal-{optimal}/seed-{seed}"
ABLATION_DIR = "results/ablation/{model}/{revision}/{target}/lam-{lam}/seed-{seed}"
LENS_DIR = "results/lens/{model}/{revision}/lam-{lam}/seed-{seed}"
# Configured λ labels and the sentinels: everything `train_mask` makes (not size-matched ones).
TRAINED_LABELS = "|".join(map(re.escape, [*GRID.lambdas, *SENTINELS]))


wildcard_constraints:
    model="|".join(GRID.models),
    tokenizer="|".join(GRID.tokenizers),
    revision=r"step\d+",
    target="|".join(TARGETS),
    lam="|".join(map(re.escape, [*GRID.lambdas, *SENTINELS, *GRID.matched_labels])),
    bigram="|".join(map(re.escape, GRID.lambdas)),
    optimal="|".join(map(re.escape, [*GRID.lambdas, *GRID.matched_labels])),
    seed=r"\d+",


def model_checkpoints(wildcards):
    """The model's checkpoint directory; a requested revision it does not have is an error
    naming both, raised while the DAG is built (before any job runs)."""
    revisions = GRID.revisions(wildcards.model)
    if wildcards.revision not in revisions:
        raise ValueError(
            f"revision {wildcards.revision!r} is not a checkpoint of {wildcards.model!r} "
            f"(its checkpoints: {', '.join(revisions)})"
        )
    return rules.pretrain.output.checkpoints.format(model=wildcards.model)


def tokenizer_vocab_size(wildcards):
    return GRID.tokenizers[wildcards.tokenizer]["vocab_size"]


def tokenizer_dir(wildcards):
    return f"results/tokenizers/{GRID.tokenizer_of(wildcards.model)}"


def model_tokens(split):
    def tokens(wildcards):
        return f"results/tokens/{GRID.tokenizer_of(wildcards.model)}/{split}.npy"

    return tokens


def model_bigrams(wildcards):
    return f"results/bigrams/{GRID.tokenizer_of(wildcards.model)}/counts.npz"


def model_arch(wildcards):
    return GRID.models[wildcards.model]["arch"]


def per_model_tokenizer(path):
    """``path`` filled with each model's tokenizer, in model order."""
    return [path.format(tokenizer=GRID.tokenizer_of(model)) for model in GRID.models]


def pretrain_params(wildcards):
    return GRID.models[wildcards.model]["pretrain"]


def mask_training_params(wildcards):
    return GRID.mask_training(wildcards.lam, wildcards.seed)


def size_matching_params(wildcards):
    """Training settings without λ (it is searched) and the bisection settings."""
    settings = GRID.mask_training_settings(wildcards.seed)
    return {"training": settings, **GRID.size_matching()}


def mask_outputs(name):
    return [f"{MASK_DIR}/{name}".format(**vars(job)) for job in MASK_JOBS]


def overlap_outputs(name):
    return [f"{OVERLAP_DIR}/{name}".format(**vars(job)) for job in GRID.overlap_jobs()]


def ablation_outputs(name):
    return [f"{ABLATION_DIR}/{name}".format(**vars(job)) for job in GRID.ablation_jobs()]


def lens_outputs(name):
    return [f"{LENS_DIR}/{name}".format(**vars(job)) for job in GRID.lens_jobs()]


def mask_file(target, lam, name="mask.safetensors"):
    """A mask file of the same model, revision and seed, for another target and λ."""

    def path(wildcards):
        return f"{MASK_DIR}/{name}".format(
            model=wildcards.model,
            revision=wildcards.revision,
            target=target,
            lam=getattr(wildcards, lam),
            seed=wildcards.seed,
        )

    return path


def configured_optimal_metas(wildcards):
    """meta.json of the configured optimal subnetworks of the same model, revision and seed: their
    sizes seed the size-matching search."""
    return [
        f"{MASK_DIR}/meta.json".format(
            model=wildcards.model,
            revision=wildcards.revision,
            target="optimal",
            lam=label,
            seed=wildcards.seed,
        )
        for label in config["optimal_masks"]["final"]
    ]


def control_seed(section):
    """Seed of a random control subnetwork: the section's `random_seed` with the mask's seed, so
    each mask seed gets its own control, reproducibly."""

    def seed(wildcards):
        return config[section]["random_seed"] * 1000 + int(wildcards.seed)

    return seed


def critical_path_priority(wildcards):
    """Optimal subnetworks start first among masks: size matching, overlaps and their tables wait
    on them, the longest chain after pretraining."""
    return 1 if wildcards.target == "optimal" else 0


def wants_fidelity(wildcards):
    return wildcards.target == "optimal"


def model_archs():
    return {name: model["arch"] for name, model in GRID.models.items()}


def eval_sequences_per_model():
    return {name: model["pretrain"]["eval_sequences"] for name, model in GRID.models.items()}


def models_of(name):
    return expand(f"results/models/{{model}}/{name}", model=GRID.models)
