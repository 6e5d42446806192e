"""Every artifact's path template, in one place: the rules, the grid and the tests format these.

Outputs live under `results/`; what is downloaded (hub snapshots of models and tokenizers, the
authors' released masks, the Hugging Face cache of the paper run) under `resources/`, which no
make target deletes (the Snakemake convention for retrieved files). A rule's log and benchmark
record are `logs/<rule>/<key>.log` and `results/benchmarks/<rule>/<key>.tsv`, the key being its
output's wildcards as below. Resume snapshots of running training jobs are not rule outputs,
so that Snakemake's clean-up of a killed job keeps them.
"""

RESULTS, RESOURCES, LOGS = "results", "resources", "logs"
BENCHMARKS = "results/benchmarks"
RESUME = "results/resume"
TABLES = "results/tables"
FIGURES = "results/figures"

# One mask, one overlap pair, one residual-stream analysis, one released mask.
MASK_KEY = "{model}/{revision}/{target}/lam-{lam}/seed-{seed}"
MATCHED_KEY = "{model}/{revision}/optimal/lam-match-{bigram_lam}/seed-{seed}"
OVERLAP_KEY = "{model}/{revision}/bigram-{bigram_lam}/optimal-{optimal_lam}/seed-{seed}"
LENS_KEY = "{model}/{revision}/lam-{lam}/seed-{seed}"
RELEASED_KEY = "{model}/lam-{lam}"

CORPUS = "results/corpus"
TOKENIZER = "results/tokenizers/{tokenizer}"  # a BPE trained here
HUB_TOKENIZER = "resources/tokenizers/{tokenizer}"  # a hub repository's or a hub model's
TOKENS = "results/tokens/{tokenizer}"
BIGRAMS = "results/bigrams/{tokenizer}"
REFERENCES = "results/references/{tokenizer}"  # what a bigram r is read against (§6)
PRETRAINED = "results/models/{model}"  # a model pretrained here: checkpoints/, history, meta
CHECKPOINT = "results/models/{model}/checkpoints/{revision}"
SNAPSHOT = "resources/models/{model}/{revision}"  # a hub model's revision, downloaded
MASK = f"results/masks/{MASK_KEY}"
MATCHED_MASK = f"results/masks/{MATCHED_KEY}"
CONTEXT_FREE = "results/context_free/{model}/{revision}"  # the model fed one token at a time
OVERLAP = f"results/overlap/{OVERLAP_KEY}"
ABLATION = f"results/ablation/{MASK_KEY}"
LENS = f"results/lens/{LENS_KEY}"
RELEASED_DOWNLOAD = f"resources/released/{RELEASED_KEY}"
RELEASED = f"results/released/{RELEASED_KEY}"
PARITY = f"results/parity/{RELEASED_KEY}"
