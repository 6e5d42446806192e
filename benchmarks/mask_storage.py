"""Disk and load time of one mask at a real shape: one bool per byte (the format before) against
packed bits (`Mask.save`), in the same process (docs/scale.md, "Disk").

    python benchmarks/mask_storage.py            # Pythia-160M's maskable weights, 10% kept
"""

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from bigram_subnetworks.masking import Mask

log = logging.getLogger("mask_storage")
# Pythia-160M (GPT-NeoX): 12 layers of fused QKV, attention output, MLP in and out (85M weights).
PYTHIA_160M = {
    f"gpt_neox.layers.{i}.{name}": shape
    for i in range(12)
    for name, shape in {
        "attention.query_key_value.weight": (2304, 768),
        "attention.dense.weight": (768, 768),
        "mlp.dense_h_to_4h.weight": (3072, 768),
        "mlp.dense_4h_to_h.weight": (768, 3072),
    }.items()
}


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kept", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generator = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(s, generator=generator) < args.kept for n, s in PYTHIA_160M.items()})
    with tempfile.TemporaryDirectory() as directory:
        bools = Path(directory) / "bools.safetensors"
        packed = Path(directory) / "packed.safetensors"
        results = {
            "save_bools_s": timed(lambda: save_file(dict(mask.tensors), str(bools)), args.repeats),
            "save_packed_s": timed(lambda: mask.save(packed), args.repeats),
            "load_bools_s": timed(lambda: Mask.load(bools), args.repeats),
            "load_packed_s": timed(lambda: Mask.load(packed), args.repeats),
        }
        assert Mask.load(packed).equals(mask) and Mask.load(bools).equals(mask)
        sizes = {"bools_mb": bools.stat().st_size / 1e6, "packed_mb": packed.stat().st_size / 1e6}
    log.info("%d weights, %.0f%% kept", mask.n_total, 100 * args.kept)
    for key, value in {**sizes, **results}.items():
        log.info("%-14s %.3f", key, value)
    disk = sizes["bools_mb"] / sizes["packed_mb"]
    load = results["load_packed_s"] / results["load_bools_s"]
    log.info("disk ratio bools/packed %.2f; load ratio packed/bools %.2f", disk, load)


if __name__ == "__main__":
    main()
