"""Fetch one of the authors' released mask pickles (read later by a restricted unpickler only)."""

import shutil

from bigram_subnetworks import logs, released
from bigram_subnetworks.atomic import atomic_path

logs.start(snakemake, threads=False)
path = released.fetch_released(**snakemake.params.source)
with atomic_path(snakemake.output.pickle) as tmp:
    shutil.copyfile(path, tmp)
