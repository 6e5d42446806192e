"""The authors' released mask as our Mask (names and shapes checked against the model)."""

from bigram_subnetworks import io, logs, released

logs.start(snakemake, threads=False)
model = io.load_model(snakemake.params.model_dir, device="cpu")
mask = released.load_released_mask(snakemake.input.pickle, model)
meta = io.provenance(
    rule="import_released_mask",
    **snakemake.wildcards,
    **snakemake.params.source,
    n_kept=mask.n_kept,
    n_total=mask.n_total,
)
mask.save(snakemake.output.mask, meta=meta)
io.write_json(meta, snakemake.output.meta)
