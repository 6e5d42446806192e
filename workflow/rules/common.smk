# Validation, wildcard constraints and every input function: rule files hold rules only.
import os
import re
from argparse import Namespace

from bigram_subnetworks import __version__
from bigram_subnetworks.config import SENTINELS, TARGETS, Grid, validate_config

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
GRID = Grid(config)
GRID.check_hub_families()
# One Hugging Face home (hub and datasets caches) for every job of the run, local or on a cluster
# (SLURM jobs inherit this environment); set before any job imports transformers.
if config["huggingface"]["home"]:
    os.environ.update(HF_HOME=os.path.abspath(config["huggingface"]["home"]))
MASK_JOBS = GRID.mask_jobs()
PRETRAINED = GRID.pretrained_models()
MASK_DIR = "results/masks/{model}/{revision}/{target}/lam-{lam}/seed-{seed}"
OVERLAP_DIR = "results/overlap/{model}/{revision}/bigram-{bigram}/optimal-{optimal}/seed-{seed}"
ABLATION_DIR = "results/ablation/{model}/{revision}/{target}/lam-{lam}/seed-{seed}"
LENS_DIR = "results/lens/{model}/{revision}/lam-{lam}/seed-{seed}"
RELEASED_DIR = "results/released/{model}/lam-{lam}"
PARITY_DIR = "results/parity/{model}/lam-{lam}"
# Configured λ labels and the sentinels: everything `train_mask` makes (not size-matched ones).
TRAINED_LABELS = "|".join(map(re.escape, [*GRID.lambdas, *SENTINELS]))


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    model=one_of(GRID.models),
    tokenizer=one_of(GRID.tokenizers),
    # Any revision name; one its model does not have is named in an error by model_checkpoints.
    revision=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    target="|".join(TARGETS),
    lam="|".join(map(re.escape, [*GRID.lambdas, *SENTINELS, *GRID.matched_labels])),
    bigram="|".join(map(re.escape, GRID.lambdas)),
    optimal="|".join(map(re.escape, [*GRID.lambdas, *GRID.matched_labels])),
    seed=r"\d+",


def model_checkpoints(wildcards):
    """What a revision's model comes from: the pretraining run's checkpoint directory, or the
    revision's hub snapshot. A requested revision the model does not have is an error naming
    both, raised while the DAG is built (before any job runs)."""
    revisions = GRID.revisions(wildcards.model)
    if wildcards.revision not in revisions:
        raise ValueError(
            f"revision {wildcards.revision!r} is not a checkpoint of {wildcards.model!r} "
            f"(its checkpoints: {', '.join(revisions)})"
        )
    if GRID.is_hub_model(wildcards.model):
        return GRID.model_directory(wildcards.model, wildcards.revision)
    return rules.pretrain.output.checkpoints.format(model=wildcards.model)


def model_dir(wildcards):
    """The loadable directory of one revision (inside `model_checkpoints` for pretrained ones)."""
    return GRID.model_directory(wildcards.model, wildcards.revision)


def hub_model(wildcards):
    """The model's `hub` section (hub id, local directory or package; GGUF file)."""
    return GRID.models[wildcards.model]["hub"]


def hub_tokenizer(wildcards):
    return GRID.tokenizer_source(wildcards.tokenizer)


def tokenizer_model_snapshot(wildcards):
    """The final snapshot of the model whose own tokenizer this is (none for a hub repo's)."""
    model = GRID.tokenizers[wildcards.tokenizer].get("model")
    return [] if model is None else GRID.model_directory(model, GRID.final_revision(model))


def model_gpu(wildcards):
    return GRID.resources(wildcards.model, "gpu", 0)


def model_threads(wildcards):
    """Intra-op threads of a model's compute jobs: 1 by default (the small models of the default
    run gain nothing from more, and run side by side), more for a large model on the CPU."""
    return GRID.resources(wildcards.model, "threads", 1)


# Retries (`retries` in profiles/slurm; `attempt` is 1 on a job's first try, and always locally)
# get more of what the failed try may have run out of. Runtime: the first try's once more per
# retry (×attempt; runtimes are estimates, and training jobs resume from their snapshots, so the
# extra time goes on from there). Memory of memory-bound rules (growth=MEMORY_GROWTH): half the
# first try's more per retry; memory otherwise stays (it is set by the model, and a larger
# request only queues the retry longer).
RETRY_GROWTH = {"runtime": 1}
MEMORY_GROWTH = 0.5


def per_attempt(value, attempt, growth):
    """``value`` on a job's first attempt, ``growth`` × ``value`` more with each retry."""
    return round(value * (1 + growth * (attempt - 1)))


def retried_runtime(minutes):
    """A rule's own runtime, grown on retries like `model_resource`'s."""
    return lambda wildcards, attempt: per_attempt(minutes, attempt, RETRY_GROWTH["runtime"])


def model_resource(name, default, times=1, growth=None):
    """A per-model resource (config `models[].resources`), else the rule's default; `times` for
    rules that do that much work several times over. Grown on retries by ``growth`` (default:
    RETRY_GROWTH, i.e. runtime ×attempt, the rest not)."""
    growth = RETRY_GROWTH.get(name, 0) if growth is None else growth

    def resource(wildcards, attempt):
        value = GRID.resources(wildcards.model, name, default) * times
        return per_attempt(value, attempt, growth)

    return resource


def model_evaluation(wildcards):
    return GRID.evaluation(wildcards.model)


def download_outputs():
    """Everything the download rules fetch: hub snapshots of every model revision and tokenizer,
    and the released masks."""
    models = [
        GRID.model_directory(model, revision)
        for model in GRID.hub_models()
        for revision in GRID.revisions(model)
    ]
    released = [
        f"{RELEASED_DIR}/subnetwork.pickle".format(model=model, lam=lam)
        for model, lam in GRID.released_runs()
    ]
    return models + [f"results/tokenizers/{name}" for name in GRID.hub_tokenizers()] + released


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
    return GRID.arch(wildcards.model)


def pretrain_params(wildcards):
    return GRID.models[wildcards.model]["pretrain"]


def mask_training_params(wildcards):
    return GRID.mask_training(wildcards.model, wildcards.lam, wildcards.seed)


def size_matching_params(wildcards):
    """Training settings without λ (it is searched) and the bisection settings."""
    settings = GRID.mask_training_settings(wildcards.model, wildcards.seed)
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
    return {name: GRID.arch(name) for name in GRID.models}


def model_revisions():
    """Each model's revisions in training order (the tables' `checkpoint` column)."""
    return {name: GRID.revisions(name) for name in GRID.models}


def eval_sequences_per_model():
    return {name: GRID.models[name]["pretrain"]["eval_sequences"] for name in PRETRAINED}


def models_of(name):
    """A per-model output of every model pretrained here."""
    return expand(f"results/models/{{model}}/{name}", model=PRETRAINED)


def per_model_tokenizer(path):
    """``path`` filled with each pretrained model's tokenizer, in model order."""
    return [path.format(tokenizer=GRID.tokenizer_of(model)) for model in PRETRAINED]


def released_source(wildcards):
    return GRID.released_source(wildcards.model, wildcards.lam)


def final_revision(wildcards):
    """A wildcards-like view of the model's final checkpoint, for the model input functions."""
    return Namespace(model=wildcards.model, revision=GRID.final_revision(wildcards.model))


def final_model_checkpoints(wildcards):
    return model_checkpoints(final_revision(wildcards))


def final_model_dir(wildcards):
    return model_dir(final_revision(wildcards))


def our_released_counterpart(wildcards):
    """Our bigram subnetwork at the released mask's model and λ (final checkpoint, first seed)."""
    return f"{MASK_DIR}/mask.safetensors".format(
        model=wildcards.model,
        revision=GRID.final_revision(wildcards.model),
        target="bigram",
        lam=wildcards.lam,
        seed=GRID.seeds[0],
    )


def released_identity(wildcards):
    """The checkpoint and seed of our mask in a parity row."""
    return {"revision": GRID.final_revision(wildcards.model), "seed": GRID.seeds[0]}


def parity_outputs():
    return [f"{PARITY_DIR}/parity.json".format(model=m, lam=lam) for m, lam in GRID.released_runs()]
