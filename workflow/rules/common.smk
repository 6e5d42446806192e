# Validation, wildcard constraints and every input function: rule files hold rules only.
import os
import re
from argparse import Namespace

from bigram_subnetworks import english, paths
from bigram_subnetworks.codehash import code_hash
from bigram_subnetworks.config import SENTINELS, TARGETS, plain, validate_config
from bigram_subnetworks.grid import Grid

# The typed configuration (a ConfigError naming every problem otherwise, before any job).
CONFIG = validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
GRID = Grid(CONFIG)
GRID.check_hub_families()
# One Hugging Face home (hub and datasets caches) for every job of the run, local or on a cluster
# (SLURM jobs inherit this environment); set before any job imports transformers.
if CONFIG.huggingface.home:
    os.environ.update(HF_HOME=os.path.abspath(CONFIG.huggingface.home))
MASK_JOBS = GRID.mask_jobs()
PRETRAINED = GRID.pretrained_models()
ANALYSES = GRID.analyses()  # which optional analyses have anything to run
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
    # λ labels of the two masks of an overlap pair, and the bigram one a size is matched to.
    bigram_lam="|".join(map(re.escape, GRID.lambdas)),
    optimal_lam="|".join(map(re.escape, [*GRID.lambdas, *GRID.matched_labels])),
    seed=r"\d+",


def library_code(script):
    """A hash of the library modules the rule's script imports (`codehash`): a rule parameter,
    so an edit to that code reruns the rule's jobs, and only theirs."""
    return code_hash(os.path.join(workflow.basedir, "workflow", "scripts", f"{script}.py"))


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


def section(name, *fields):
    """A config section as the plain mapping a script reads; with ``fields``, only those: a
    job's params hold only what it uses, so adding a run (a new entry of the section's `runs`)
    reruns no existing job."""
    settings = plain(getattr(CONFIG, name))
    return {field: settings[field] for field in fields} if fields else settings


def corpus_settings():
    """The corpus section's settings of its configured text source only: the source's text,
    not how it is cut into sequences (the tokenize rule's), decides the corpus."""
    corpus = section("corpus")
    own = {"local": "local_paths"}.get(corpus["source"], corpus["source"])
    return {"source": corpus["source"], **({own: corpus[own]} if own in corpus else {})}


def model_dir(wildcards):
    """The loadable directory of one revision (inside `model_checkpoints` for pretrained ones)."""
    return GRID.model_directory(wildcards.model, wildcards.revision)


def hub_model(wildcards):
    """The model's `hub` section (hub id, local directory or package; GGUF file)."""
    return plain(GRID.models[wildcards.model].hub)


def hub_tokenizer(wildcards):
    return GRID.tokenizer_source(wildcards.tokenizer)


def tokenizer_model_snapshot(wildcards):
    """The final snapshot of the model whose own tokenizer this is (none for a hub repo's)."""
    model = GRID.tokenizers[wildcards.tokenizer].model
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


def english_artifact(key):
    """Where an artifact of the offline English corpus is kept (`english.ARTIFACTS`)."""
    return f"{CONFIG.corpus.offline_english.directory}/{english.ARTIFACTS[key].filename}"


def english_artifacts(wildcards):
    """The package files the corpus is read from, by artifact: those of the offline English
    corpus's sources (none for another corpus source)."""
    if CONFIG.corpus.source != "offline_english":
        return {}
    keys = english.artifacts_of(CONFIG.corpus.offline_english.sources)
    return {key: english_artifact(key) for key in keys}


def english_artifact_key(wildcards):
    return english.artifact_key(wildcards.filename)


def english_filenames():
    """What the offline English corpus's package files are stored as."""
    return [artifact.filename for artifact in english.ARTIFACTS.values()]


def download_outputs():
    """Everything the download rules fetch: hub snapshots of every model revision and tokenizer,
    the released masks, and the offline English corpus's package files."""
    models = [
        GRID.model_directory(model, revision)
        for model in GRID.hub_models()
        for revision in GRID.revisions(model)
    ]
    released = [
        f"{paths.RELEASED_DOWNLOAD}/subnetwork.pickle".format(model=model, lam=lam)
        for model, lam in GRID.released_runs()
    ]
    tokenizers = [GRID.tokenizer_directory(name) for name in GRID.hub_tokenizers()]
    return models + tokenizers + released + list(english_artifacts(None).values())


def tokenizer_vocab_size(wildcards):
    return GRID.tokenizers[wildcards.tokenizer].vocab_size


def tokenizer_of_split(wildcards):
    """The tokenizer directory a corpus is cut with (trained here, or downloaded)."""
    return GRID.tokenizer_directory(wildcards.tokenizer)


def tokenizer_dir(wildcards):
    return GRID.tokenizer_directory(GRID.tokenizer_of(wildcards.model))


def model_tokens(split):
    def tokens(wildcards):
        tokenizer = GRID.tokenizer_of(wildcards.model)
        return f"{paths.TOKENS}/{split}.npy".format(tokenizer=tokenizer)

    return tokens


def model_bigrams(wildcards):
    return f"{paths.BIGRAMS}/counts.npz".format(tokenizer=GRID.tokenizer_of(wildcards.model))


def model_tokens_meta(wildcards):
    """The tokens' meta.json (whether sequences start with a BOS token)."""
    return f"{paths.TOKENS}/meta.json".format(tokenizer=GRID.tokenizer_of(wildcards.model))


def model_arch(wildcards):
    return GRID.arch(wildcards.model)


def pretrain_params(wildcards):
    return dict(GRID.models[wildcards.model].pretrain)


def mask_training_params(wildcards):
    return GRID.mask_training(wildcards.model, wildcards.lam, wildcards.seed)


def size_matching_params(wildcards):
    """Training settings without λ (it is searched) and the bisection settings."""
    settings = GRID.mask_training_settings(wildcards.model, wildcards.seed)
    return {"training": settings, **GRID.size_matching()}


def mask_outputs(name):
    return [f"{paths.MASK}/{name}".format(**vars(job)) for job in MASK_JOBS]


def reference_outputs():
    """The bigram references of the table of every model with masks (one per tokenizer)."""
    tokenizers = sorted({GRID.tokenizer_of(job.model) for job in MASK_JOBS})
    return [f"{paths.REFERENCES}/references.json".format(tokenizer=t) for t in tokenizers]


def context_free_outputs():
    """The context-free r of every model checkpoint with bigram masks."""
    cells = sorted({(job.model, job.revision) for job in MASK_JOBS if job.target == "bigram"})
    return [f"{paths.CONTEXT_FREE}/metrics.json".format(model=m, revision=r) for m, r in cells]


def model_tokenizers():
    return {name: GRID.tokenizer_of(name) for name in GRID.models}


def trained_mask_outputs(name):
    """A file of every trained mask (the sentinels are not trained)."""
    return [f"{paths.MASK}/{name}".format(**vars(j)) for j in MASK_JOBS if j.lam not in SENTINELS]


def overlap_outputs(name):
    return [f"{paths.OVERLAP}/{name}".format(**vars(job)) for job in GRID.overlap_jobs()]


def ablation_outputs(name):
    return [f"{paths.ABLATION}/{name}".format(**vars(job)) for job in GRID.ablation_jobs()]


def lens_outputs(name):
    return [f"{paths.LENS}/{name}".format(**vars(job)) for job in GRID.lens_jobs()]


def mask_file(target, lam, name="mask.safetensors"):
    """A mask file of the same model, revision and seed, for another target and the λ label in
    wildcard ``lam``."""

    def path(wildcards):
        return f"{paths.MASK}/{name}".format(
            model=wildcards.model,
            revision=wildcards.revision,
            target=target,
            lam=getattr(wildcards, lam),
            seed=wildcards.seed,
        )

    return path


def configured_optimal_files(name):
    """A file of each configured optimal subnetwork of the same model, revision and seed: their
    sizes seed the size-matching search, and one already matched in size is reused."""

    def files(wildcards):
        return [
            f"{paths.MASK}/{name}".format(
                model=wildcards.model,
                revision=wildcards.revision,
                target="optimal",
                lam=label,
                seed=wildcards.seed,
            )
            for label in CONFIG.optimal_masks.final
        ]

    return files


def control_seed(section):
    """Seed of a random control subnetwork: the section's `random_seed` with the mask's seed, so
    each mask seed gets its own control, reproducibly."""

    def seed(wildcards):
        return getattr(CONFIG, section).random_seed * 1000 + int(wildcards.seed)

    return seed


def critical_path_priority(wildcards):
    """Trainings start before the evaluations and analyses that become ready beside them (a
    trained mask's evaluation or ablation takes minutes, another mask's training up to an hour
    on a CPU; the SmolLM2 cold run lost one training's length to that order), and optimal
    subnetworks first among masks: size matching, overlaps and their tables wait on them, the
    longest chain after pretraining."""
    return 2 if wildcards.target == "optimal" else 1


def wants_fidelity(wildcards):
    return wildcards.target == "optimal"


def model_archs():
    return {name: GRID.arch(name) for name in GRID.models}


def model_revisions():
    """Each model's revisions in training order (the tables' `checkpoint` column)."""
    return {name: GRID.revisions(name) for name in GRID.models}


def eval_sequences_per_model():
    return {name: GRID.models[name].pretrain["eval_sequences"] for name in PRETRAINED}


def models_of(name):
    """A per-model output of every model pretrained here."""
    return [f"{paths.PRETRAINED}/{name}".format(model=model) for model in PRETRAINED]


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
    return f"{paths.MASK}/mask.safetensors".format(
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
    return [
        f"{paths.PARITY}/parity.json".format(model=m, lam=lam) for m, lam in GRID.released_runs()
    ]
