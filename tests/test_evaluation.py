"""Evaluation metrics on tiny real models, and the figures rendered from tidy tables."""

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from bigram_subnetworks import plots
from bigram_subnetworks.ablation import (
    ABLATION_CONDITIONS,
    ablation,
    ablation_masks,
    dose_response,
    generations,
    random_removals,
    removal_sizes,
)
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
    # Both models share one tokenizer's table; the context-free r of model a at step10 only.
    table = {"floor": {"r_drop_inf": 0.3}, "generalizing": {"r_drop_inf": 0.7},
             "copy": {"r_drop_inf": 0.8, "r_drop_inf_se": 0.001}}  # fmt: skip
    context_free = [{"model": "a", "revision": "step10", "r_drop_inf": 0.55}]
    return collect_tables(
        metrics,
        layers,
        {"a": "gpt_neox", "b": "gpt2"},
        references={"tok": table},
        context_free=context_free,
        tokenizers={"a": "tok", "b": "tok"},
    )


def test_collected_tables_are_tidy():
    metrics, summary, layers, _ = _tables()
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


def test_every_r_sits_beside_its_references():
    """Each row carries its table's floor, generalizing and copy r, the full model's (the `full`
    sentinel of the same model and checkpoint) and the context-free r, and its position between
    them; the references table has one row per model × checkpoint × reference."""
    metrics, summary, _, references = _tables()
    row = metrics[(metrics["model"] == "a") & (metrics["revision"] == "step10")]
    row = row[(row["target"] == "bigram") & (row["lam"] == "10") & (row["seed"] == 1)].iloc[0]
    full = 0.5 + 100 / 400  # the full sentinel's r at seed 0 (the sentinel's seed)
    assert row["r_drop_inf"] == pytest.approx(0.5 + 8 / 400 + 0.01)
    assert (row["floor_r_drop_inf"], row["generalizing_r_drop_inf"]) == (0.3, 0.7)
    assert (row["copy_r_drop_inf"], row["context_free_r_drop_inf"]) == (0.8, 0.55)
    assert row["full_r_drop_inf"] == pytest.approx(full)
    assert row["r_drop_inf_position"] == pytest.approx((row["r_drop_inf"] - 0.3) / 0.5)
    assert row["r_drop_inf_position_generalizing"] == pytest.approx((row["r_drop_inf"] - 0.3) / 0.4)
    assert np.isnan(row["floor_rho_drop_inf"]) and np.isnan(row["rho_drop_inf_position"])
    # Only model a at step10 has a context-free r; the summary's position is of the mean r.
    assert metrics.loc[metrics["model"] == "b", "context_free_r_drop_inf"].isna().all()
    mean = summary[(summary["model"] == "a") & (summary["revision"] == "step10")]
    mean = mean[(mean["target"] == "bigram") & (mean["lam"] == "10")].iloc[0]
    assert mean["r_drop_inf_position"] == pytest.approx((mean["r_drop_inf"] - 0.3) / 0.5)
    assert "floor_r_drop_inf_ci_low" not in summary
    # 2 models × 2 checkpoints × (floor, generalizing, copy, full) + 1 context-free row.
    assert len(references) == 2 * 2 * 4 + 1
    assert list(references.columns[:6]) == ["model", "arch", "revision", "checkpoint", "step",
                                            "tokenizer"]  # fmt: skip
    of_a = references[(references["model"] == "a") & (references["revision"] == "step10")]
    assert of_a["predictor"].tolist() == ["floor", "generalizing", "copy", "full", "context_free"]
    by = of_a.set_index("predictor")
    assert by.loc["copy", "r_drop_inf_position"] == pytest.approx(1.0)
    assert by.loc["floor", "r_drop_inf_position"] == pytest.approx(0.0)
    assert by.loc["context_free", "r_drop_inf_position"] == pytest.approx(0.25 / 0.5)
    assert by.loc["generalizing", "r_drop_inf_position_generalizing"] == pytest.approx(1.0)
    assert by.loc["copy", "r_drop_inf_se"] == 0.001 and np.isnan(by.loc["floor", "r_drop_inf_se"])


def test_r_vs_size_draws_the_references():
    _, summary, _, _ = _tables()
    figure = plots.r_vs_size(summary)
    lines = {line.get_label(): line for ax in figure.axes for line in ax.get_lines()}
    table = {"floor: unigram", "generalizing: held-out smoothed bigram", "copy: smoothed table"}
    assert table | {"a: full model", "b: full model", "a: context-free"} < set(lines)
    assert "b: context-free" not in lines  # b has no context-free r at its final checkpoint
    assert lines["a: context-free"].get_ydata()[0] == pytest.approx(0.55)
    assert lines["generalizing: held-out smoothed bigram"].get_ydata()[0] == pytest.approx(0.7)


def test_seed_summary_matches_a_t_interval():
    table = pd.DataFrame({"k": ["x"] * 3 + ["y"], "v": [1.0, 2.0, 4.0, 5.0]})
    summary = summarize_seeds(table, ["k"], ["v"]).set_index("k")
    half = scipy.stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / np.sqrt(3)
    assert summary.loc["x", "v"] == pytest.approx(7 / 3)
    assert summary.loc["x", "v_ci_high"] == pytest.approx(7 / 3 + half)
    assert summary.loc["y", "n_seeds"] == 1 and np.isnan(summary.loc["y", "v_ci_low"])


@pytest.mark.parametrize("figure", ["r_vs_size", "kept_by_layer"])
def test_figures_render(figure, tmp_path):
    _, summary, layers, _ = _tables()
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


def test_removal_sizes_are_log_spaced_up_to_the_subnetwork():
    sizes = removal_sizes(n_total=1_000_000, n_subnetwork=100_000, points=5, min_fraction=0.001)
    assert sizes == [1000, 3162, 10000, 31623, 100000]
    assert removal_sizes(1000, 10, 8, 0.001) == [1, 2, 3, 4, 5, 7, 10]  # rounding merges two
    assert removal_sizes(1_000_000, 500, 8, 0.001) == [500]  # smaller than the smallest size
    assert removal_sizes(1000, 0, 8, 0.001) == []
    with pytest.raises(ValueError, match="points"):
        removal_sizes(1000, 10, 1, 0.001)
    with pytest.raises(ValueError, match="min_fraction"):
        removal_sizes(1000, 10, 4, 0.0)


def test_random_removals_are_nested_and_end_at_the_full_minus_random_condition(arch):
    mask = _random_mask(make_tiny_model(arch), density=0.3)
    sizes = removal_sizes(mask.n_total, mask.n_kept, points=6, min_fraction=0.001)
    removals = list(random_removals(mask, sizes, seed=3))
    random = ablation_masks(mask, seed=3)["random"]
    previous = Mask.empty(mask.shapes)
    for (size, keep), expected in zip(removals, sizes, strict=True):
        removed = ~keep
        assert size == expected and removed.n_kept == size
        assert (removed & ~random).n_kept == 0  # drawn from the random same-count subnetwork
        assert (previous & keep).n_kept == 0  # nested: every smaller removal is inside
        previous = removed
    assert removals[-1][1].equals(ablation_masks(mask, seed=3)["full_minus_random"])
    # halfway, every matrix loses about half of the random subnetwork's weights there
    half = next(random_removals(mask, [mask.n_kept // 2], seed=3))[1]
    for name, (kept, _) in random.per_tensor().items():
        lost = int((~half.tensors[name]).sum())
        assert abs(lost - kept / 2) <= 4 * np.sqrt(kept) + 1
    assert not next(random_removals(mask, [10], seed=4))[1].equals(removals[0][1])


def test_dose_response_table(arch, random_tokens):
    model = make_tiny_model(arch)
    mask = _random_mask(model, density=0.2)
    conditions = ablation(model, mask, random_tokens, VOCAB, batch_size=32, seed=0)
    table = dose_response(
        model, mask, random_tokens, VOCAB, 32, 0, points=4, min_fraction=0.01,
        conditions=conditions,
    )  # fmt: skip
    sizes = removal_sizes(mask.n_total, mask.n_kept, 4, 0.01)
    assert table["removal"].tolist() == ["none", *["random"] * len(sizes), "subnetwork"]
    assert table["n_removed"].tolist() == [0, *sizes, mask.n_kept]
    assert (table["fraction_removed"] == table["n_removed"] / mask.n_total).all()
    by_condition = conditions.set_index("condition")["mean_surprisal_bits"]
    bits = table["mean_surprisal_bits"].tolist()
    assert bits[0] == by_condition["full"] and bits[-1] == by_condition["full_minus_subnetwork"]
    assert bits[-2] == by_condition["full_minus_random"]  # the same mask, not evaluated again
    _, keep = next(random_removals(mask, sizes[1:2], seed=0))
    direct = run_model(model, random_tokens, VOCAB, 32, mask=keep).surprisal
    assert bits[2] == pytest.approx(direct.mean(), rel=1e-6)
    assert (table["n_tokens"] == direct.size).all()
    with pytest.raises(ValueError, match="not of this mask"):
        dose_response(model, ~mask, random_tokens, VOCAB, 32, 0, points=4, min_fraction=0.01,
                      conditions=conditions)  # fmt: skip


def test_ablation_dose_response_figure_renders(tmp_path):
    rows = []
    for seed, n_kept in ((0, 400), (1, 380)):
        rows += [{"removal": "none", "n_removed": 0, "mean_surprisal_bits": 5.0}]
        rows += [
            {"removal": "random", "n_removed": n, "mean_surprisal_bits": 5.0 + n / 100}
            for n in (1, 10, 100, n_kept)
        ]
        rows += [{"removal": "subnetwork", "n_removed": n_kept, "mean_surprisal_bits": 12.0}]
        for row in rows[-6:]:
            row.update(seed=seed, fraction_removed=row["n_removed"] / 1000)
    table = pd.DataFrame(rows).assign(model="m", target="bigram", lam="10", checkpoint=0)
    plots.save_figure(plots.ablation_dose_response(table), tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_similarity_and_overlap_figures_draw_the_new_measures(tmp_path):
    """The covariance figure has a CKA row beside the cosine row of each run; the overlap figure
    draws the configured pair, with its magnitude control as ticks."""
    layers = [{"layer_i": i, "layer_j": j} for i in range(3) for j in range(3)]
    covariance = pd.DataFrame(
        [{**cell, "condition": c} for c in plots.CONDITION_LABELS for cell in layers]
    ).assign(model="m", lam="10", seed=0, checkpoint=0, similarity=0.9, cka=0.3)
    figure = plots.covariance(covariance)
    titles = [ax.get_title() for ax in figure.axes]
    assert (
        sum("covariance cosine" in t for t in titles) == sum("linear CKA" in t for t in titles) == 3
    )
    plots.save_figure(figure, tmp_path / "c.png")
    blocks = pd.DataFrame(
        [
            {"pair": pair, "layer": layer, "block": block, "n_both": n, "expected_both": 3}
            for pair, n in (("bigram-optimal", 10), ("bigram-magnitude", 5))
            for layer in range(2)
            for block in ("attn_q", "mlp_in")
        ]
    ).assign(model="m", bigram_lam="10", optimal_lam="10", seed=0)
    figure = plots.overlap(blocks)
    assert len(figure.axes) == 1  # one panel per configured pair, not per pair kind
    ticks = [line for line in figure.axes[0].get_lines() if line.get_marker() == "_"]
    assert [list(line.get_ydata()) for line in ticks] == [[5, 5], [5, 5]]
    plots.save_figure(figure, tmp_path / "o.png")


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
