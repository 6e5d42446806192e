"""Evaluation metrics on tiny real models, and the figures rendered from tidy tables."""

import numpy as np
import pandas as pd
import pytest
import torch

from bigram_subnetworks import plots
from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.evaluation import (
    bigram_correlations,
    collect_tables,
    evaluate_mask,
    kept_by_block,
    run_model,
)
from bigram_subnetworks.masking import Mask

from conftest import VOCAB, make_tiny_model


def test_correlation_variants_handle_infinities():
    model = np.array([1.0, 2.0, 3.0, np.inf])
    bigram = np.array([1.0, 2.0, np.inf, 4.0])
    r = bigram_correlations(model, bigram)
    # clip-inf: model inf → 3, bigram inf → 4; drop-inf: the third token is dropped.
    assert r["r_clip_inf"] == pytest.approx(np.corrcoef([1, 2, 3, 3], [1, 2, 4, 4])[0, 1])
    assert r["r_drop_inf"] == pytest.approx(np.corrcoef([1, 2, 3], [1, 2, 4])[0, 1])
    assert r["fraction_inf_bigram"] == 0.25


def test_surprisal_matches_the_model_loss(arch, random_tokens):
    model = make_tiny_model(arch)
    out = run_model(model, random_tokens, VOCAB, batch_size=16)
    ids = torch.from_numpy(random_tokens)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert out.surprisal.shape == (64, 15)
    assert out.eval_loss == pytest.approx(float(loss), rel=1e-5)


def test_full_mask_metrics_and_block_counts(arch, random_tokens):
    model = make_tiny_model(arch)
    bigrams = BigramModel(BigramCounts.count(random_tokens, VOCAB))
    full = Mask.full({n: w.shape for n, w in maskable_parameters(model).items()})
    metrics = evaluate_mask(model, full, random_tokens, bigrams, batch_size=32)
    assert metrics["kept_fraction"] == 1.0
    assert -1 <= metrics["r_drop_inf"] <= 1
    assert metrics["xent_bigram"] > 0
    blocks = kept_by_block(model, full)
    assert set(blocks["block"]) == {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out"}
    assert blocks["n_total"].sum() == full.n_total
    per_head = kept_by_block(model, full, per_head=True)
    assert len(per_head[per_head["block"] == "attn_q"]) == 2 * 4  # layers × heads


def _tables():
    metrics, layers = [], []
    for model in ("a", "b"):
        for lam, value, kept in (("full", float("-inf"), 100), ("1", 1.0, 40), ("10", 10.0, 8)):
            for revision in ("step0", "step10"):
                identity = {
                    "model": model,
                    "revision": revision,
                    "target": "bigram",
                    "lam": lam,
                    "lam_value": value,
                }
                metrics.append(
                    {**identity, "n_kept": kept, "r_drop_inf": 0.5 + kept / 400, "r_clip_inf": 0.4}
                )
                layers.append(
                    pd.DataFrame(
                        {
                            "layer": [0, 0, 1, 1],
                            "block": ["mlp_in", "attn_q"] * 2,
                            "n_kept": [kept, 1, 2, 3],
                            "n_total": [100] * 4,
                        }
                    ).assign(**identity)
                )
    return collect_tables(metrics, layers, {"a": "gpt_neox", "b": "gpt2"})


def test_collected_tables_are_tidy():
    metrics, layers = _tables()
    assert len(metrics) == 12 and len(layers) == 48
    assert metrics["step"].tolist()[:3] == [0, 0, 0]
    assert metrics.groupby(["model", "step"])["lam"].apply(list).iloc[0] == ["full", "1", "10"]


@pytest.mark.parametrize("figure", ["r_vs_size", "kept_by_layer"])
def test_figures_render(figure, tmp_path):
    metrics, layers = _tables()
    fig = getattr(plots, figure)(metrics if figure == "r_vs_size" else layers)
    plots.save_figure(fig, tmp_path / "f.png", tmp_path / "f.pdf")
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f.pdf").exists()


def test_pretraining_figure_renders(tmp_path):
    table = pd.DataFrame(
        {
            "model": ["m"] * 3,
            "step": [0, 10, 100],
            "eval_loss": [8.0, 6.0, 5.0],
            "bigram_loss": [5.5] * 3,
            "bigram_weight": [0.7] * 3,
            "unigram_loss": [6.8] * 3,
        }
    )
    plots.save_figure(plots.pretraining(table), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
