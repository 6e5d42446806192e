"""The workflow on a real SLURM cluster through `profiles/slurm` (snakemake-executor-plugin-slurm).

Needs a cluster that answers `sinfo` and has accounting (`sacct`): CI brings one up on localhost
with `ci/slurm-up.sh` and sets REQUIRE_SLURM=1, which turns a missing cluster into a failure;
elsewhere these tests are skipped without one. Try it locally (as root, Debian/Ubuntu):
    ci/slurm-up.sh && REQUIRE_SLURM=1 .venv/bin/python -m pytest tests/test_slurm.py
    ci/slurm-down.sh
"""

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROFILE = ROOT / "profiles/slurm"
pytestmark = pytest.mark.workflow

# The end-to-end run takes 4-8 min on a 2-core machine; past this it is stuck, not slow.
RUN_TIMEOUT_S = 1200
# Status checks every second (the profile waits 20 s, sensible on a shared cluster): on the CI
# cluster every job takes seconds, and 20 s between checks would make most of the run waiting.
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "1")
FAST_POLLING += ("--seconds-between-status-checks", "1")


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _slurm_unavailable() -> str | None:
    """Why this machine cannot run the SLURM tests, or None when it can."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (`pip install -e '.[slurm]'`)"
    for command in (["sinfo", "-h", "-o", "%t"], ["sacct", "-X", "-n", "-S", "now"]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"`{' '.join(command)}` does not answer: {error}"
        if result.returncode != 0:
            return f"`{' '.join(command)}` failed: {result.stderr.strip()}"
        if command[0] == "sinfo" and not {"idle", "mix", "alloc"} & set(result.stdout.split()):
            return f"no SLURM node is up (`sinfo` node states: {result.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _slurm_unavailable()
    if reason is None:
        return
    if os.environ.get("REQUIRE_SLURM") == "1":
        pytest.fail(f"REQUIRE_SLURM=1 but SLURM is unavailable: {reason}", pytrace=False)
    pytest.skip(f"no SLURM cluster ({reason}); `ci/slurm-up.sh` starts one on localhost")


def _gpus_on_cluster() -> bool:
    result = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True)
    return "gpu" in result.stdout


def _run_through_slurm(workdir: Path, *args, timeout_s: int = RUN_TIMEOUT_S):
    """Snakemake with the SLURM profile, in ``workdir``; returns (exit code, output, run id)."""
    command = [
        "timeout", "-k", "30", str(timeout_s),
        BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--directory", workdir,
        "--workflow-profile", PROFILE, *FAST_POLLING, *args,
    ]  # fmt: skip
    started = time.time()
    env = _env()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    if run_id:  # a run cut off by the timeout may leave jobs queued
        subprocess.run(["scancel", "--name", run_id[1]], capture_output=True)
    if result.returncode in (124, 137):
        pytest.fail(f"no result within {timeout_s} s (timed out):\n{output[-20000:]}")
    print(f"snakemake through SLURM: {time.time() - started:.0f} s, exit code {result.returncode}")
    return result.returncode, output, run_id[1] if run_id else None


def _sacct(run_id: str) -> list[dict[str, str]]:
    """Accounting records (allocations, not steps) of the jobs a Snakemake run submitted."""
    fields = ["JobID", "JobName", "Comment", "State", "AllocTRES"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2 * 86400))
    command = ["sacct", "-X", "-n", "-P", "-S", since, "--name", run_id]
    result = subprocess.run(
        [*command, "-o", ",".join(fields)], capture_output=True, text=True, check=True
    )
    return [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines()]


def _rule_of(comment: str) -> str:
    """The rule in the comment the plugin gives a job: rule_<rule>[_wildcards_<values>]."""
    return re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)[1]


def _submitted(output: str) -> dict[str, str]:
    """SLURM job id -> log path, from Snakemake's "has been submitted" lines."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", output)
    return dict(found)


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_run")
    args = ["--configfile", ROOT / ".test/config.yaml"]
    gpus = _gpus_on_cluster()
    if gpus:  # one rule on the (fake) GPUs; every other job declares gpu=0, i.e. requests none
        args += ["--set-resources", "evaluate_mask:gpu=1"]
    code, output, run_id = _run_through_slurm(workdir, *args)
    return workdir, args, code, output, run_id, gpus


def test_test_config_runs_end_to_end_through_slurm(slurm_run):
    workdir, args, code, output, _, _ = slurm_run
    assert code == 0, output[-20000:]
    # profiles/slurm is the only profile: profiles/default (local runs) is not merged in.
    assert f"Using workflow specific profile {PROFILE} " in output
    assert "profiles/default" not in output
    # Every final table and figure (the inputs of rule `all`) exists and is up to date.
    dry_run = subprocess.run(
        [BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--directory", workdir,
         "--workflow-profile", PROFILE, "-n", *args],
        cwd=workdir, env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr, dry_run.stdout + dry_run.stderr
    tables = list((workdir / "results/tables").glob("*.tsv"))
    figures = list((workdir / "results/figures").glob("*.png"))
    assert len(tables) >= 10 and figures, (tables, figures)
    assert all(path.stat().st_size > 0 for path in tables + figures)
    # SLURM logs kept (slurm-keep-successful-logs) where the profile puts them.
    logs = list((workdir / "logs/slurm").rglob("*.log"))
    assert len(logs) == len(_submitted(output)), logs


def test_every_job_ran_as_a_slurm_job(slurm_run):
    """sacct has one COMPLETED job per non-local job, named by the run id, with the rule in its
    comment; only the jobs of the rule set to gpu=1 were given a GPU."""
    _, _, code, output, run_id, gpus = slurm_run
    assert code == 0 and run_id, output[-20000:]
    remote = Counter(re.findall(r"^rule (\w+):$", output, re.M))
    local = Counter(re.findall(r"^localrule (\w+):$", output, re.M))
    stats = output.split("Job stats:")[1].split("total")[0]
    planned = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert remote + local == Counter(planned), (remote, local, planned)
    assert remote["train_mask"] > 0 and remote["plot"] > 0

    jobs = _sacct(run_id)
    assert {job["JobID"] for job in jobs} == set(_submitted(output)), (jobs, output[-20000:])
    assert [job for job in jobs if job["State"] != "COMPLETED"] == []
    assert all(job["JobName"] == run_id for job in jobs)
    rules = Counter(_rule_of(job["Comment"]) for job in jobs)
    assert rules == remote
    on_gpu = {job["Comment"] for job in jobs if "gres/gpu=" in job["AllocTRES"]}
    expected = {job["Comment"] for job in jobs if job["Comment"].startswith("rule_evaluate_mask_")}
    assert on_gpu == (expected if gpus else set())


def test_a_failing_job_fails_the_run_with_its_reason(slurm, tmp_path):
    """A corpus of one document: the corpus rule (local) and the tokenizer (SLURM) succeed, the
    train/eval split (SLURM) cannot be made; Snakemake must exit non-zero showing why."""
    document = tmp_path / "only.txt"
    document.write_text("A corpus of a single document cannot be split into train and eval.\n")
    overlay = tmp_path / "one_document.yaml"
    overlay.write_text(f"corpus:\n  source: local\n  local_paths: ['{document}']\n")
    args = ["--configfile", ROOT / ".test/config.yaml", overlay, "--until", "tokenize"]
    code, output, run_id = _run_through_slurm(tmp_path, *args, timeout_s=600)
    assert code != 0, output
    assert "Error in rule tokenize" in output, output
    # show-failed-logs: the job's own log, with the exception, is in Snakemake's output.
    assert "need at least 2 documents for a train/eval split, got 1" in output, output
    states = {_rule_of(job["Comment"]): job["State"] for job in _sacct(run_id)}
    assert states == {"train_tokenizer": "COMPLETED", "tokenize": "FAILED"}, states
