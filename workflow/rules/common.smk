# Validation, wildcard constraints and every input function: rule files hold rules only.
from pathlib import Path

from bigram_subnetworks import __version__
from bigram_subnetworks.config import Grid, validate_config

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
GRID = Grid(config)
MASK_JOBS = GRID.mask_jobs()
MASK_DIR = "results/masks/{model}/{revision}/{target}/lam-{lam}"


wildcard_constraints:
    model="|".join(GRID.models),
    tokenizer="|".join(GRID.tokenizers),
    revision=r"step\d+",
    target="bigram",
    lam="|".join([*GRID.lambdas, "full", "empty"]),


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
    return GRID.mask_training(wildcards.lam)


def mask_outputs(name):
    return [f"{MASK_DIR}/{name}".format(**vars(job)) for job in MASK_JOBS]


def model_archs():
    return {name: model["arch"] for name, model in GRID.models.items()}


def eval_sequences_per_model():
    return {name: model["pretrain"]["eval_sequences"] for name, model in GRID.models.items()}


def models_of(name):
    return expand(f"results/models/{{model}}/{name}", model=GRID.models)


def mask_lambda_value(wildcards):
    return GRID.lambda_value(wildcards.lam)
