"""The workflow as a user runs it: lint, formatting, the DAG, and `.test/config.yaml` end to end."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from bigram_subnetworks.io import load_model
from bigram_subnetworks.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.workflow


def run(*args, cwd=ROOT, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def snakemake(*args, cwd=ROOT, check=True):
    return run(BIN / "snakemake", "--snakefile", ROOT / "Snakefile", *args, cwd=cwd, check=check)


def job_counts(dry_run_output: str) -> Counter:
    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)})


def test_snakemake_lint_is_clean():
    result = snakemake("--lint")
    assert "Congratulations" in result.stdout + result.stderr


def test_snakefmt_and_ruff_are_clean():
    run(BIN / "snakefmt", "--check", "Snakefile", "workflow")
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")


def test_default_dag():
    counts = job_counts(snakemake("-n", "--forceall").stdout)
    # 2 models × ((4 λ + full + empty) at the final checkpoint + λ 10 at 2 earlier ones
    # + 2 optimal λ); 2 size-matched optimal masks, each evaluated too.
    assert counts["train_mask"] == 2 * (6 + 2 + 2)
    assert counts["match_mask_size"] == 2
    assert counts["evaluate_mask"] == counts["train_mask"] + counts["match_mask_size"]
    assert counts["overlap"] == 4 and counts["ablation"] == 2
    assert counts["lens"] == 2  # the final checkpoint of both models
    assert counts["plot"] == 10
    assert counts["pretrain"] == 2 and counts["corpus"] == counts["tokenize"] == 1


def test_test_config_replaces_the_default_grid():
    """`--configfile` merges over config.yaml: lists must replace, so no default model leaks in."""
    output = snakemake("-n", "--forceall", "--configfile", ".test/config.yaml").stdout
    counts = job_counts(output)
    # 3 models × (λ 1 at both checkpoints × 2 seeds + full + empty) + 1 optimal λ × 2 seeds.
    assert counts["pretrain"] == 3 and counts["train_mask"] == 3 * (4 + 2) + 2
    assert "pythia-tiny" not in output and "neox-test" in output


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mask_training:\n  learning_rat: 0.1\n")
    result = snakemake("-n", "--configfile", bad, check=False)
    assert result.returncode != 0
    assert "learning_rat" in result.stdout + result.stderr


def test_revision_that_is_not_a_checkpoint_fails_before_any_job(tmp_path):
    args = ("--configfile", ROOT / ".test/config.yaml", "--directory", tmp_path)
    target = "results/masks/neox-test/step7/bigram/lam-1/seed-0/mask.safetensors"
    result = snakemake("-n", *args, target, check=False)
    assert result.returncode != 0
    message = "revision 'step7' is not a checkpoint of 'neox-test' (its checkpoints: step0, step40)"
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def test_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    args = ("--configfile", ROOT / ".test/config.yaml", "--directory", workdir)
    snakemake("--cores", "2", *args)
    return workdir, args


MASK_FILES = ("mask.safetensors", "history.tsv", "meta.json", "metrics.json", "layers.tsv")
FIGURES = (
    "r_vs_size",
    "kept_by_layer",
    "training_curves",
    "pretraining",
    "overlap",
    "ablation",
    "ablation_dose_response",
    "lens",
    "covariance",
    "dynamics",
)


def test_every_output_exists(test_run):
    workdir, _ = test_run
    masks = workdir / "results/masks"
    for model in ("neox-test", "gpt2-test", "llama-test"):
        checkpoint = workdir / f"results/models/{model}/checkpoints/step40"
        # Each checkpoint carries its tokenizer, as a hub snapshot does.
        assert len(load_tokenizer(checkpoint)) == 512
        assert load_model(checkpoint).config.vocab_size == 512
        mask_dirs = [masks / f"{model}/step40/bigram/lam-{lam}/seed-0" for lam in ("full", "empty")]
        mask_dirs += [
            masks / f"{model}/{rev}/bigram/lam-1/seed-{s}"
            for rev in ("step0", "step40")
            for s in (0, 1)
        ]
        for mask_dir in mask_dirs:
            for name in MASK_FILES:
                assert (mask_dir / name).stat().st_size > 0, mask_dir / name
            assert (
                json.loads((mask_dir / "meta.json").read_text())["lam"] == mask_dir.parent.name[4:]
            )
    for seed in (0, 1):
        for lam in ("0.1", "match-1"):
            mask_dir = masks / f"llama-test/step40/optimal/lam-{lam}/seed-{seed}"
            for name in MASK_FILES:
                assert (mask_dir / name).stat().st_size > 0, mask_dir / name
        meta = json.loads(
            (masks / f"llama-test/step40/optimal/lam-match-1/seed-{seed}/meta.json").read_text()
        )
        search = pd.read_csv(
            masks / f"llama-test/step40/optimal/lam-match-1/seed-{seed}/search.tsv", sep="\t"
        )
        assert meta["lam_value"] in search["lam"].tolist() and meta["seed"] == str(seed)
    for figure in FIGURES:
        for suffix in ("png", "pdf"):
            assert (workdir / f"results/figures/{figure}.{suffix}").stat().st_size > 1000
    assert not list(workdir.rglob(".*.tmp*"))


def _table(workdir, name):
    return pd.read_csv(
        workdir / f"results/tables/{name}.tsv",
        sep="\t",
        dtype={"lam": str, "bigram_lam": str, "optimal_lam": str},
    )


def test_tables_have_the_documented_columns(test_run):
    workdir, _ = test_run
    metrics = _table(workdir, "metrics")
    assert {
        "model", "arch", "revision", "checkpoint", "step", "target", "lam", "lam_value", "seed",
        "n_kept",
        "n_total", "kept_fraction", "r_clip_inf", "r_drop_inf", "xent_bigram", "eval_loss",
    } <= set(metrics.columns)  # fmt: skip
    assert len(metrics) == 3 * (4 + 2) + 2 * 2
    by_lam = metrics.set_index(["model", "lam"])["kept_fraction"]
    assert (by_lam.xs("full", level="lam") == 1.0).all()
    assert (by_lam.xs("empty", level="lam") == 0.0).all()
    optimal = metrics[metrics["target"] == "optimal"]
    assert optimal["r_full"].between(-1, 1).all() and (optimal["xent_full"] > 0).all()
    assert metrics[metrics["target"] == "bigram"]["r_full"].isna().all()
    summary = _table(workdir, "metrics_summary")
    assert {"n_seeds", "r_drop_inf_ci_low", "r_drop_inf_ci_high"} <= set(summary.columns)
    trained = summary[summary["lam"] == "1"]
    assert (trained["n_seeds"] == 2).all()
    assert (trained["r_drop_inf_ci_low"] <= trained["r_drop_inf"]).all()
    layers = _table(workdir, "layers")
    assert {"layer", "block", "n_kept", "n_total", "kept_fraction", "seed"} <= set(layers.columns)
    # masks × layers × blocks: 6 blocks per layer, 7 in the Llama layout (its MLP has a gate)
    blocks = metrics["arch"].map({"gpt_neox": 6, "gpt2": 6, "llama": 7})
    assert len(layers) == (blocks * 2).sum()
    assert set(layers.loc[layers["arch"] == "llama", "block"]) == {
        "attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate", "mlp_in", "mlp_out"
    }  # fmt: skip
    pretraining = _table(workdir, "pretraining")
    assert {"model", "step", "eval_loss", "bigram_loss", "unigram_loss"} <= set(pretraining)


def test_overlap_tables(test_run):
    workdir, _ = test_run
    overlap = _table(workdir, "overlap")
    assert len(overlap) == 2 * 2 * 2  # pairs × pair kinds (configured, magnitude control) × seeds
    assert set(overlap["optimal_lam"]) == {"0.1", "match-1"}
    assert set(overlap["pair"]) == {"bigram-optimal", "bigram-magnitude"}
    sizes = overlap.pivot_table(index=["optimal_lam", "seed"], columns="pair", values="n_b")
    assert (sizes["bigram-optimal"] == sizes["bigram-magnitude"]).all()  # size-matched control
    assert (overlap["overlap"] == overlap["n_both"] / overlap["n_total"]).all()
    assert overlap["p_value"].between(0, 1).all() and (overlap["permutations"] == 1000).all()
    summary = _table(workdir, "overlap_summary")
    assert (summary["n_seeds"] == 2).all() and len(summary) == 2 * 2
    blocks = _table(workdir, "overlap_blocks")
    keys = ["optimal_lam", "pair", "seed"]
    totals = blocks.groupby(keys)["n_both"].sum().reset_index()
    merged = totals.merge(overlap, on=keys, suffixes=("_blocks", ""))
    assert len(merged) == len(overlap) and (merged["n_both_blocks"] == merged["n_both"]).all()


def test_ablation_and_generation_tables(test_run):
    workdir, _ = test_run
    ablation = _table(workdir, "ablation")
    assert len(ablation) == 2 * 2 * 5  # runs × seeds × conditions
    full = ablation[ablation["condition"] == "full"]
    assert (full["kept_fraction"] == 1.0).all() and (full["mean_surprisal_bits"] > 0).all()
    assert (_table(workdir, "ablation_summary")["n_seeds"] == 2).all()
    doses = _table(workdir, "ablation_dose_response")
    assert set(doses["removal"]) == {"none", "random", "subnetwork"}
    for _, run in doses.groupby(["model", "seed"]):
        random = run[run["removal"] == "random"]
        own = run[run["removal"] == "subnetwork"].iloc[0]
        assert random["n_removed"].is_monotonic_increasing and len(random) >= 1
        assert random["n_removed"].iloc[-1] == own["n_removed"]
        assert (run["fraction_removed"] > 0).sum() == len(run) - 1
        assert run["mean_surprisal_bits"].notna().all()
    generations = _table(workdir, "generations")
    assert len(generations) == 2 * 2 * 5 * 2  # runs × seeds × conditions × samples
    assert (generations["prompt"] == "This is").all()


def test_residual_stream_and_dynamics_tables(test_run):
    workdir, _ = test_run
    lens = _table(workdir, "lens")
    assert set(lens["condition"]) == {"full", "subnetwork", "full_minus_subnetwork", "random"}
    assert len(lens) == 2 * 4 * 3  # seeds × conditions × layers 0..2
    assert {"out_corr", "in_recall1", "in_recall10", "out_rotation", "in_rotation"} <= set(lens)
    assert {"out_rotation_dominant", "out_scaling_dominant", "out_n_dominant"} <= set(lens)
    covariance = _table(workdir, "covariance")
    diagonal = covariance[covariance["layer_i"] == covariance["layer_j"]]
    assert np.allclose(diagonal["similarity"], 1.0) and np.allclose(diagonal["cka"], 1.0)
    assert covariance["cka"].between(0, 1 + 1e-9).all()
    assert len(_table(workdir, "lens_summary")) == 4 * 3
    dynamics = _table(workdir, "dynamics")
    assert len(dynamics) == 3 * 2 * 2  # models × checkpoints × seeds
    assert set(dynamics["step"]) == {0, 40} and "first_mlp_share" in dynamics


def test_training_snapshots_are_removed_and_were_where_the_rule_says(test_run):
    workdir, _ = test_run
    assert not [p for p in (workdir / "results/resume").rglob("*") if p.is_file()]
    log = workdir / "logs/train_mask/neox-test/step40/bigram/lam-1/seed-0.log"
    assert "snapshots every 10 steps in results/resume/train_mask/neox-test/step40/bigram/" in (
        log.read_text()
    )


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # a thread or process that just exited
            children += [int(c) for c in (task / "children").read_text().split()]
    return children + [d for c in children for d in _descendants(c)]


def test_killed_job_resumes_when_the_same_command_is_rerun(test_run, tmp_path):
    """SIGKILL the job mid-training (as a cluster preempting it would), rerun the same command:
    it resumes from the snapshot and ends with the mask the uninterrupted run made."""
    workdir, _ = test_run
    copy = tmp_path / "run"
    _copy_run(workdir, copy)
    mask_dir = "results/masks/neox-test/step40/bigram/lam-1/seed-0"
    expected = load_file(copy / mask_dir / "mask.safetensors")
    (copy / mask_dir / "mask.safetensors").unlink()
    (copy / "often.yaml").write_text("resume: {pretrain_every: 20, mask_every: 2}\n")
    command = [
        BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--cores", "1",
        "--configfile", ROOT / ".test/config.yaml", copy / "often.yaml",
        "--directory", copy, f"{mask_dir}/mask.safetensors",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    snapshot = copy / "results/resume/train_mask/neox-test/step40/bigram/lam-1/seed-0/state.pt"
    workflow = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
    while workflow.poll() is None and not snapshot.exists():
        time.sleep(0.005)
    jobs = _descendants(workflow.pid)
    assert workflow.poll() is None and jobs, "the job finished before its first snapshot"
    for pid in jobs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    output, _ = workflow.communicate(timeout=120)
    assert workflow.returncode != 0 and "Error in rule train_mask" in output, output
    assert snapshot.exists() and not (copy / mask_dir / "mask.safetensors").exists()
    run(*command)
    log = (copy / "logs/train_mask/neox-test/step40/bigram/lam-1/seed-0.log").read_text()
    assert "resuming from results/resume/train_mask/neox-test/step40/bigram/lam-1/seed-0" in log
    resumed = load_file(copy / mask_dir / "mask.safetensors")  # the header's provenance differs
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    assert not snapshot.parent.exists()


def test_same_config_twice_gives_identical_masks_metrics_and_tables(test_run, tmp_path):
    """Determinism: a second run in a fresh directory reproduces every mask bit for bit, every
    metrics.json and every table row except the step times (figures excepted: their files embed
    dates). The second run has only llama-test, the model every analysis runs on (optimal and
    size-matched masks, overlap, ablation, residual stream, two checkpoints), in about 60% of
    a whole run's time (121 against 194 s); its rows are compared with the first run's rows of
    that model. neox-test's and gpt2-test's masks are not rerun."""
    workdir, _ = test_run
    test_config = yaml.safe_load((ROOT / ".test/config.yaml").read_text())
    (model,) = [entry for entry in test_config["models"] if entry["name"] == "llama-test"]
    runs = [run for run in test_config["ablation"]["runs"] if run["model"] == "llama-test"]
    override = {"models": [model], "ablation": {"runs": runs}}
    (tmp_path / "llama.yaml").write_text(yaml.safe_dump(override))
    configs = ("--configfile", ROOT / ".test/config.yaml", tmp_path / "llama.yaml")
    snakemake("--cores", "2", *configs, "--directory", tmp_path)
    masks = sorted(
        p.relative_to(tmp_path) for p in tmp_path.glob("results/masks/**/mask.safetensors")
    )
    # full, empty, λ 1 × 2 checkpoints × 2 seeds, optimal λ 0.1 and size-matched × 2 seeds
    assert len(masks) == 10 and all(path.parts[2] == "llama-test" for path in masks)
    for path in masks:
        first, second = load_file(workdir / path), load_file(tmp_path / path)
        assert first.keys() == second.keys(), path
        assert all(torch.equal(first[name], second[name]) for name in first), path
    for path in tmp_path.glob("results/masks/**/metrics.json"):
        first = workdir / path.relative_to(tmp_path)
        assert json.loads(path.read_text()) == json.loads(first.read_text()), path
    tables = sorted(tmp_path.glob("results/tables/*.tsv"))
    assert {"overlap", "ablation", "lens", "dynamics", "metrics"} <= {p.stem for p in tables}
    for path in tables:
        second = pd.read_csv(path, sep="\t", dtype=str)
        first = pd.read_csv(workdir / path.relative_to(tmp_path), sep="\t", dtype=str)
        if "model" in first.columns:
            first = first[first["model"] == "llama-test"].reset_index(drop=True)
        timing = [c for c in first.columns if c.startswith("ms_")]
        pd.testing.assert_frame_equal(first.drop(columns=timing), second.drop(columns=timing))
    # Every artifact made with randomness records its seed (reading the corpus and counting
    # bigrams draw none).
    for meta in workdir.glob("results/**/meta.json"):
        if not {"bigrams", "corpus"} & set(meta.parts):
            assert "seed" in meta.read_text(), meta


def test_second_run_has_nothing_to_do(test_run):
    _, args = test_run
    result = snakemake("-n", *args)
    assert "Nothing to be done" in result.stdout + result.stderr


def _copy_run(workdir: Path, copy: Path) -> None:
    """The run directory with Snakemake's records (what it ran, with which parameters)."""
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(".snakemake"))
    shutil.copytree(
        workdir / ".snakemake", copy / ".snakemake", ignore=shutil.ignore_patterns("conda")
    )


def _dry_run_of_a_copy(test_run, tmp_path: Path) -> tuple[Path, tuple]:
    """A copy of the checkout (the Snakefile runs the library beside it, so a library edit goes
    there) and of the test run, and the dry-run command of the copy's workflow on the copied run."""
    workdir, _ = test_run
    checkout, copy = tmp_path / "checkout", tmp_path / "run"
    skip = (".git", ".venv", ".snakemake", "results", "resources", "logs", "*.egg-info")
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(*skip, "__pycache__"))
    _copy_run(workdir, copy)
    command = (
        BIN / "snakemake", "--snakefile", checkout / "Snakefile", "-n",
        "--configfile", checkout / ".test/config.yaml", "--directory", copy,
    )  # fmt: skip
    return checkout, command


def test_a_library_edit_reruns_exactly_the_jobs_that_run_it(test_run, tmp_path):
    """Rules carry a hash of the library modules their scripts import: editing one function in
    overlap.py (to an equivalent body) reruns the overlap jobs and what reads their outputs, and
    nothing upstream. The checkout is copied, since the Snakefile runs the library beside it."""
    checkout, command = _dry_run_of_a_copy(test_run, tmp_path)
    unchanged = run(*command)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr, unchanged.stdout
    library = checkout / "src/bigram_subnetworks/overlap.py"
    before = "    return int(np.count_nonzero(np.asarray(mask)))\n"
    assert library.read_text().count(before) == 1
    after = "    return int(np.asarray(mask).sum())\n"
    library.write_text(library.read_text().replace(before, after))
    edited = run(*command)
    assert job_counts(edited.stdout) == {"overlap": 4, "collect_overlap": 1, "plot": 1, "all": 1}
    assert "params have changed since last execution" in edited.stdout
    assert "Rules with provenance triggered jobs: overlap" in edited.stdout


def test_a_docstring_edit_or_a_new_run_reruns_no_existing_job(test_run, tmp_path):
    """Reruns follow behaviour: a docstring and a comment edited in a module every rule imports
    leave nothing to do; a new residual-stream run adds its own jobs and reruns no existing
    lens job (each job's params hold only what it uses)."""
    checkout, command = _dry_run_of_a_copy(test_run, tmp_path)
    for module in ("architectures.py", "io.py"):
        library = checkout / "src/bigram_subnetworks" / module
        text = library.read_text()
        start = text.index('"""') + 3
        edited = text[:start] + "An edited docstring. " + text[start:]
        library.write_text(edited.replace("\n\n\n", "\n\n\n# A new comment.\n", 1))
    unchanged = run(*command)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr, unchanged.stdout
    more = tmp_path / "more_runs.yaml"
    more.write_text(
        "residual_stream:\n  runs: [{model: llama-test, lam: '1'}, {model: neox-test, lam: '1'}]\n"
    )
    added = run(*command[:6], more, *command[6:])  # a second --configfile, merged last
    # The new run's lens jobs (2 seeds), the table that gathers them and its two figures.
    assert job_counts(added.stdout) == {"lens": 2, "collect_lens": 1, "plot": 2, "all": 1}
    lens_jobs = re.findall(
        r"rule lens:\n\s+input: .*\n\s+output: results/lens/([\w-]+)/", added.stdout
    )
    assert lens_jobs == ["neox-test", "neox-test"]  # no existing llama-test lens job reruns


REPORT_TABLES = (
    "metrics_summary",
    "layers",
    "overlap_summary",
    "ablation_summary",
    "lens_summary",
    "pretraining",
    "dynamics",
)


def _caption_titles() -> dict[str, str]:
    """The bold opening phrase of every caption: per figure (one file, branches on the wildcard)
    and per table (one file each)."""
    figures = (ROOT / "workflow/report/figure.rst").read_text()
    titles = dict(re.findall(r'figure == "(\w+)" %}\n\*\*(.+?)\*\*', figures))
    for name in REPORT_TABLES:
        caption = (ROOT / f"workflow/report/tables/{name}.rst").read_text()
        titles[f"{name}.tsv"] = re.match(r"\*\*(.+?)\*\*", caption)[1]
    return titles


def _in_report(text: str, html: str) -> bool:
    """Captions and the description sit in the report as JSON strings (non-ASCII escaped)."""
    return json.dumps(text)[1:-1] in html


def test_report_has_every_figure_and_main_table_with_captions(test_run, tmp_path):
    workdir, args = test_run
    report = workdir / "results/report.html"
    snakemake("--report", report, *args)
    html = report.read_text()
    # Self-contained: results embedded as data URIs, nothing fetched when the file is opened.
    assert not re.search(r"""(src|href)=\\?["']?(https?:)?//""", html)
    titles = _caption_titles()
    assert set(FIGURES) <= titles.keys()
    for figure in FIGURES:
        assert f'"figure": "{figure}"' in html, figure
        assert re.search(rf"data:image/png;[^,]*filename={figure}\.png;base64,", html), figure
        assert _in_report(titles[figure], html), figure
        assert f"{figure}.pdf" not in html  # only the PNG goes in
    for name in REPORT_TABLES:
        assert f'"table": "{name}"' in html, name
        assert re.search(rf"data:text/tab-separated-values;[^,]*filename={name}\.tsv;", html)
        assert _in_report(titles[f"{name}.tsv"], html), name
    # The description is rendered from the config; no caption has an rST error.
    assert _in_report("reproduced end to end", html) and "neox-test" in html
    assert "system-message" not in html and "Unknown target name" not in html
    # A report of fewer figures (as a config with fewer figures gives) still renders: table links
    # of the captions fall back to file names when the table is not in the report.
    subset = tmp_path / "subset.html"
    snakemake("--report", subset, *args, "results/figures/lens.png", "results/figures/overlap.png")
    html = subset.read_text()
    assert _in_report(titles["lens"], html) and _in_report(titles["overlap"], html)
    assert not _in_report(titles["r_vs_size"], html)
    assert "system-message" not in html


def test_a_workflow_mask_loads_as_a_library_subnetwork(test_run):
    """One on-disk format: a mask directory of the workflow is a `Subnetwork` directory."""
    from bigram_subnetworks import Subnetwork

    workdir, _ = test_run
    loaded = Subnetwork.load(workdir / "results/masks/neox-test/step40/bigram/lam-1/seed-0")
    meta = json.loads(
        (workdir / "results/masks/neox-test/step40/bigram/lam-1/seed-0/meta.json").read_text()
    )
    assert loaded.mask.n_kept == meta["n_kept"] and loaded.config.lam == meta["lam_value"]
    assert loaded.ended == meta["ended"] and loaded.steps == len(loaded.history)


# Each optional analysis left out on its own (merged over .test/config.yaml): its jobs, tables
# and figures drop out of the DAG and the rest still builds. Optimal masks go with the overlap
# pairs that compare them.
LEFT_OUT = {
    "overlap": ("overlap: {pairs: []}", ["overlap", "collect_overlap"]),
    "ablation": ("ablation: {runs: []}", ["ablation", "collect_ablation"]),
    "residual_stream": ("residual_stream: {runs: []}", ["lens", "collect_lens"]),
    "dynamics": ("bigram_masks: {intermediate: []}", ["summarize_dynamics"]),
    "optimal_masks": (
        "optimal_masks: {models: [], final: [], size_matched: {bigram: []}}\noverlap: {pairs: []}",
        ["match_mask_size", "overlap"],
    ),
}


@pytest.fixture(scope="module")
def test_config_jobs(tmp_path_factory):
    """The job counts of .test/config.yaml's whole DAG."""
    configs = ("--configfile", ROOT / ".test/config.yaml")
    workdir = tmp_path_factory.mktemp("dag")
    return job_counts(snakemake("-n", "--forceall", *configs, "--directory", workdir).stdout)


@pytest.mark.parametrize("analysis", LEFT_OUT)
def test_each_optional_analysis_can_be_left_out(analysis, test_config_jobs, tmp_path):
    override, jobs = LEFT_OUT[analysis]
    (tmp_path / "left_out.yaml").write_text(override + "\n")
    configs = ("--configfile", ROOT / ".test/config.yaml", tmp_path / "left_out.yaml")
    output = snakemake("-n", "--forceall", *configs, "--directory", tmp_path).stdout
    counts = job_counts(output)
    assert counts["all"] == 1 and counts["evaluate_mask"] > 0
    assert all(counts[job] == 0 for job in jobs), counts
    full = test_config_jobs
    assert all(full[job] > 0 for job in jobs)  # the default test config does run them
    if analysis == "optimal_masks":
        assert counts["train_mask"] == full["train_mask"] - 2  # optimal λ 0.1 for 2 seeds
    figures = {"overlap", "ablation", "lens", "covariance", "dynamics"} & set(
        re.findall(r"results/figures/(\w+)\.png", output)
    )
    expected = {
        "overlap": {"ablation", "lens", "covariance", "dynamics"},
        "ablation": {"overlap", "lens", "covariance", "dynamics"},
        "residual_stream": {"overlap", "ablation", "dynamics"},
        "dynamics": {"overlap", "ablation", "lens", "covariance"},
        "optimal_masks": {"ablation", "lens", "covariance", "dynamics"},
    }
    assert figures == expected[analysis]


def test_a_run_with_every_optional_analysis_left_out_completes_and_says_so(tmp_path):
    (tmp_path / "lean.yaml").write_text(
        "models: [{name: neox-test, arch: gpt_neox, tokenizer: bpe512, pretrain: {hidden_size: 32,"
        " num_layers: 2, num_heads: 2, intermediate_size: 64, max_positions: 64, steps: 20,"
        " batch_size: 16, learning_rate: 3.0e-3, warmup_steps: 5, weight_decay: 0.1,"
        " eval_every: 20, eval_sequences: 64, checkpoints: [20], seed: 0, log_every: 10}}]\n"
        "bigram_masks: {final: ['1'], intermediate: []}\n"
        "optimal_masks: {models: [], final: [], size_matched: {bigram: []}}\n"
        "mask_training: {max_steps: 10, attempts: 1, seeds: [0]}\n"
        "overlap: {pairs: []}\nablation: {runs: []}\nresidual_stream: {runs: []}\n"
    )
    args = ("--configfile", ROOT / ".test/config.yaml", tmp_path / "lean.yaml")
    args += ("--directory", tmp_path)
    snakemake("--cores", "2", *args)
    tables = {path.stem for path in (tmp_path / "results/tables").glob("*.tsv")}
    assert {"metrics", "metrics_summary", "layers", "references", "training_curves"} <= tables
    assert not tables & {"overlap", "ablation", "lens", "dynamics", "parity"}
    figures = {path.stem for path in (tmp_path / "results/figures").glob("*.png")}
    assert figures == {"r_vs_size", "kept_by_layer", "training_curves", "pretraining"}
    snakemake("--report", tmp_path / "report.html", *args)
    html = (tmp_path / "report.html").read_text()
    assert _in_report("Not run", html)
    for what in ("overlap (", "ablation (", "residual-stream analyses (", "training dynamics ("):
        assert _in_report(what, html), what
    assert "Every analysis ran" not in html
