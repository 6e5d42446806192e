"""Evaluation metrics on tiny real models, and the figures rendered from tidy tables."""

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from bigram_subnetworks import plots
from bigram_subnetworks.ablation import ABLATION_CONDITIONS, ablation, ablation_masks, generations
from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.evaluation import (
    bigram_correlations,
    evaluate_mask,
    kept_by_block,
    run_model,
)
from bigram_subnetworks.masking import Mask
from bigram_subnetworks.pretrain import save_checkpoint_dir
from bigram_subnetworks.tables import IDENTITY_COLUMNS, collect_tables, summarize_seeds
from bigram_subnetworks.tokenizer import load_tokenizer, train_bpe

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
    gate = {"mlp_gate"} if arch == "llama" else set()
    assert (
        set(blocks["block"]) == {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out"} | gate
    )
    assert blocks["n_total"].sum() == full.n_total
    per_head = kept_by_block(model, full, per_head=True)
    assert len(per_head[per_head["block"] == "attn_q"]) == 2 * 4  # layers × heads
    kv_heads = 2 if arch == "llama" else 4  # the tiny Llama has grouped-query attention
    assert len(per_head[per_head["block"] == "attn_k"]) == 2 * kv_heads


def _tables():
    metrics, layers = [], []
    grid = [("full", float("-inf"), 100), ("1", 1.0, 40), ("10", 10.0, 8)]
    for model, target, (lam, value, kept), revision, seed in itertools.product(
        ("a", "b"), ("bigram", "optimal"), grid, ("step0", "step10"), (0, 1)
    ):
        identity = {
            "model": model,
            "revision": revision,
            "target": target,
            "lam": lam,
            "lam_value": value,
            "seed": seed,
        }
        r = 0.5 + kept / 400 + seed / 100
        metrics.append({**identity, "n_kept": kept, "r_drop_inf": r, "r_clip_inf": 0.4})
        blocks = {"layer": [0, 0, 1, 1], "block": ["mlp_in", "attn_q"] * 2}
        counts = {"n_kept": [kept, 1, 2, 3], "n_total": [100] * 4}
        layers.append(pd.DataFrame({**blocks, **counts}).assign(**identity))
    return collect_tables(metrics, layers, {"a": "gpt_neox", "b": "gpt2"})


def test_collected_tables_are_tidy():
    metrics, summary, layers = _tables()
    assert len(metrics) == 48 and len(layers) == 192 and len(summary) == 24
    assert metrics["step"].tolist()[:6] == [0] * 6
    first = metrics[(metrics["model"] == "a") & (metrics["step"] == 0)]
    assert (
        first[first["target"] == "bigram"]["lam"].tolist() == ["full"] * 2 + ["1"] * 2 + ["10"] * 2
    )
    assert list(metrics.columns[:9]) == IDENTITY_COLUMNS
    # Two seeds: r = base + seed/100 → mean base + 0.005, CI symmetric around it.
    row = summary[(summary["lam"] == "10") & (summary["target"] == "optimal")].iloc[0]
    assert row["n_seeds"] == 2
    assert row["r_drop_inf"] == pytest.approx(0.5 + 8 / 400 + 0.005)
    assert row["r_drop_inf_ci_low"] < row["r_drop_inf"] < row["r_drop_inf_ci_high"]


def test_seed_summary_matches_a_t_interval():
    table = pd.DataFrame({"k": ["x"] * 3 + ["y"], "v": [1.0, 2.0, 4.0, 5.0]})
    summary = summarize_seeds(table, ["k"], ["v"]).set_index("k")
    half = scipy.stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / np.sqrt(3)
    assert summary.loc["x", "v"] == pytest.approx(7 / 3)
    assert summary.loc["x", "v_ci_high"] == pytest.approx(7 / 3 + half)
    assert summary.loc["y", "n_seeds"] == 1 and np.isnan(summary.loc["y", "v_ci_low"])


@pytest.mark.parametrize("figure", ["r_vs_size", "kept_by_layer"])
def test_figures_render(figure, tmp_path):
    _, summary, layers = _tables()
    fig = getattr(plots, figure)(summary.assign(arch="gpt2") if figure == "r_vs_size" else layers)
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


def _random_mask(model, density=0.2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return Mask(
        {
            name: torch.rand(w.shape, generator=generator) < density
            for name, w in maskable_parameters(model).items()
        }
    )


def test_fidelity_of_the_full_mask_is_perfect(arch, random_tokens):
    """An all-kept optimal subnetwork is the full model: r = 1, and its CE against the full
    model equals the full model's own entropy."""
    model = make_tiny_model(arch)
    bigrams = BigramModel(BigramCounts.count(random_tokens, VOCAB))
    full = Mask.full({n: w.shape for n, w in maskable_parameters(model).items()})
    metrics = evaluate_mask(model, full, random_tokens, bigrams, batch_size=32, fidelity=True)
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.from_numpy(random_tokens)).logits, -1)
    entropy = float(-(p * p.log()).sum(-1).mean())
    assert metrics["r_full"] == pytest.approx(1.0)
    assert metrics["xent_full"] == pytest.approx(entropy, rel=1e-5)
    sparse = evaluate_mask(model, _random_mask(model), random_tokens, bigrams, 32, fidelity=True)
    assert sparse["r_full"] < 1 and sparse["xent_full"] > entropy
    assert "r_full" not in evaluate_mask(model, full, random_tokens, bigrams, batch_size=32)


def test_compare_full_reports_the_unmasked_model(arch, random_tokens):
    model = make_tiny_model(arch)
    full = run_model(model, random_tokens, VOCAB, 16)
    masked = run_model(model, random_tokens, VOCAB, 16, mask=_random_mask(model), compare_full=True)
    np.testing.assert_allclose(masked.full_surprisal, full.surprisal, rtol=1e-6)
    assert not np.allclose(masked.surprisal, full.surprisal)
    assert masked.xent_full > 0 and full.xent_full is None


def test_masked_run_equals_zeroed_weights(arch, random_tokens):
    model = make_tiny_model(arch)
    mask = _random_mask(model)
    substituted = run_model(model, random_tokens, VOCAB, 16, mask=mask).surprisal
    with torch.no_grad():
        for name, keep in mask.tensors.items():
            model.get_parameter(name).mul_(keep)
    np.testing.assert_allclose(substituted, run_model(model, random_tokens, VOCAB, 16).surprisal)


def test_ablation_conditions_are_mask_algebra(arch):
    model = make_tiny_model(arch)
    mask = _random_mask(model, density=0.1)
    conditions = ablation_masks(mask, seed=3)
    assert tuple(conditions) == ABLATION_CONDITIONS
    assert conditions["full"].density == 1.0 and conditions["subnetwork"].equals(mask)
    assert conditions["full_minus_subnetwork"].equals(~mask)
    assert (conditions["full_minus_subnetwork"] & mask).n_kept == 0
    random = conditions["random"]
    assert random.per_tensor() == mask.per_tensor()  # same count in every matrix
    assert not random.equals(mask)
    assert conditions["full_minus_random"].equals(~random)
    assert ablation_masks(mask, seed=3)["random"].equals(random)


def test_ablation_table(arch, random_tokens):
    model = make_tiny_model(arch)
    mask = _random_mask(model, density=0.1)
    table = ablation(model, mask, random_tokens, VOCAB, batch_size=32, seed=0).set_index(
        "condition"
    )
    assert list(table.index) == list(ABLATION_CONDITIONS)
    full = run_model(model, random_tokens, VOCAB, 32).surprisal
    assert table.loc["full", "mean_surprisal_bits"] == pytest.approx(full.mean(), rel=1e-6)
    assert table.loc["full", "std_surprisal_bits"] == pytest.approx(full.std(), rel=1e-6)
    assert table.loc["subnetwork", "n_kept"] == mask.n_kept
    assert (table["n_tokens"] == full.size).all()


def test_generations_per_condition(arch, tmp_path):
    tokenizer = train_bpe(["This is a test. This is only a test of the generator."] * 20, 300)
    model = make_tiny_model(arch, vocab_size=len(tokenizer) + 3)  # padded logit columns
    save_checkpoint_dir(model, tmp_path, tokenizer)
    tokenizer = load_tokenizer(tmp_path)
    mask = _random_mask(model)
    settings = {"prompt": "This is", "temperature": 0.3, "max_new_tokens": 8, "samples": 2}
    texts = generations(model, tokenizer, mask, seed=0, **settings)
    assert len(texts) == 2 * len(ABLATION_CONDITIONS)
    assert set(texts["condition"]) == set(ABLATION_CONDITIONS)
    assert (texts["prompt"] == "This is").all() and texts["text"].str.len().gt(0).any()
    again = generations(model, tokenizer, mask, seed=0, **settings)
    assert again.equals(texts)
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        generations(model, tokenizer, mask, 0, "This is", 0.3, 63, 1)


def test_generated_text_with_carriage_returns_survives_the_tsv_table(tmp_path):
    """Python's CSV writer quotes newlines but not a bare carriage return, which pandas then
    reads as a row break: generated text is normalised before it is tabled."""
    from bigram_subnetworks.ablation import plain_lines
    from bigram_subnetworks.io import write_table

    texts = ["a\rb", "c\r\nd", "e\nf"]
    table = pd.DataFrame({"text": [plain_lines(t) for t in texts], "model": "m"})
    write_table(table, tmp_path / "t.tsv")
    back = pd.read_csv(tmp_path / "t.tsv", sep="\t", keep_default_na=False)
    assert back["text"].tolist() == ["a\nb", "c\nd", "e\nf"] and (back["model"] == "m").all()
