"""The workflow on a real SLURM cluster through `profiles/slurm` (snakemake-executor-plugin-slurm).

Needs a cluster that answers `sinfo` and has accounting (`sacct`): CI brings one up on localhost
with `ci/slurm-up.sh` and sets REQUIRE_SLURM=1, which turns a missing cluster into a failure;
elsewhere these tests are skipped without one. Try it locally (as root, Debian/Ubuntu):
    ci/slurm-up.sh && REQUIRE_SLURM=1 .venv/bin/python -m pytest tests/test_slurm.py
    ci/slurm-down.sh
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROFILE = ROOT / "profiles/slurm"
pytestmark = pytest.mark.workflow

# The SLURM run: training, evaluation, a collect and a plot, i.e. every kind of resource request
# (threads, memory, GPU) the workflow makes; tests/test_workflow.py runs every output locally.
SLURM_TARGETS = ("results/tables/metrics.tsv", "results/figures/r_vs_size.png")
# The run takes 2-5 min on a 2-core machine; past this it is stuck, not slow.
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


def _run_through_slurm(workdir: Path, *args, timeout_s: int = RUN_TIMEOUT_S, watch=None):
    """Snakemake with the SLURM profile, in ``workdir``; returns (exit code, output, run id).
    ``watch``, if given, is called about twice a second while Snakemake runs."""
    command = [
        "timeout", "-k", "30", str(timeout_s),
        BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--directory", workdir,
        "--workflow-profile", PROFILE, *FAST_POLLING, *args,
    ]  # fmt: skip
    started = time.time()
    env = _env()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=stdout, stderr=stderr)
        try:
            while process.poll() is None:
                if watch is not None:
                    watch()
                time.sleep(0.5)
        finally:
            if process.poll() is None:  # `watch` failed: cancel the jobs (some may be held), and
                for job in _queued(workdir):  # stop Snakemake (`timeout` passes the signal on)
                    subprocess.run(["scancel", job["JobID"]], capture_output=True)
                process.terminate()
                process.wait()
            stdout.seek(0)
            stderr.seek(0)
            output = stdout.read() + stderr.read()
            run_id = re.search(r"SLURM run ID: (\S+)", output)
            if run_id:  # a run cut off by the timeout may leave jobs queued
                subprocess.run(["scancel", "--name", run_id[1]], capture_output=True)
    if process.returncode in (124, 137):
        pytest.fail(f"no result within {timeout_s} s (timed out):\n{output[-20000:]}")
    print(f"snakemake through SLURM: {time.time() - started:.0f} s, exit code {process.returncode}")
    return process.returncode, output, run_id[1] if run_id else None


def _queued(workdir: Path) -> list[dict[str, str]]:
    """The SLURM jobs still queued (pending or running) that were submitted from ``workdir``."""
    fields = ["JobID", "Comment", "State", "Reason", "WorkDir"]
    result = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k|%T|%r|%Z"], capture_output=True, text=True, check=True
    )
    jobs = [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines()]
    return [job for job in jobs if Path(job["WorkDir"]).resolve() == workdir.resolve()]


def _sacct(run_id: str) -> list[dict[str, str]]:
    """Accounting records (allocations, not steps) of the jobs a Snakemake run submitted, in
    submission order."""
    fields = ["JobID", "JobName", "Comment", "State", "AllocTRES", "Timelimit", "ReqMem"]
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
    args += ["--", *SLURM_TARGETS]
    code, output, run_id = _run_through_slurm(workdir, *args)
    return workdir, args, code, output, run_id, gpus


def test_test_config_trains_evaluates_and_plots_through_slurm(slurm_run):
    workdir, args, code, output, _, _ = slurm_run
    assert code == 0, output[-20000:]
    # profiles/slurm is the only profile: profiles/default (local runs) is not merged in.
    assert f"Using workflow specific profile {PROFILE} " in output
    assert "profiles/default" not in output
    # The targets exist and are up to date.
    dry_run = subprocess.run(
        [BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--directory", workdir,
         "--workflow-profile", PROFILE, "-n", *args],
        cwd=workdir, env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr, dry_run.stdout + dry_run.stderr
    assert all((workdir / target).stat().st_size > 0 for target in SLURM_TARGETS)
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
    args += ["--retries", "0"]  # each retry of the failure would add half a minute
    code, output, run_id = _run_through_slurm(tmp_path, *args, timeout_s=600)
    assert code != 0, output
    assert "Error in rule tokenize" in output, output
    # show-failed-logs: the job's own log, with the exception, is in Snakemake's output.
    assert "need at least 2 documents for a train/eval split, got 1" in output, output
    states = {_rule_of(job["Comment"]): job["State"] for job in _sacct(run_id)}
    assert states == {"train_tokenizer": "COMPLETED", "tokenize": "FAILED"}, states


# The test config's tokens, bigram counts and neox-test pretrained: the start of the retry and
# keep-going tests, which send only the jobs they are about through SLURM.
PREPARED = ["results/bigrams/bpe512/counts.npz", "results/models/neox-test/meta.json"]


@pytest.fixture(scope="module")
def prepared(slurm, tmp_path_factory):
    """A working directory with PREPARED made locally (profiles/default, no SLURM: the end-to-end
    test sends these jobs through SLURM already)."""
    workdir = tmp_path_factory.mktemp("prepared")
    command = [
        BIN / "snakemake", "--snakefile", ROOT / "Snakefile", "--directory", workdir,
        "--workflow-profile", ROOT / "profiles/default", "--cores", "2",
        "--configfile", ROOT / ".test/config.yaml", "--", *PREPARED,
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-20000:]
    return workdir


def _copy(prepared: Path, tmp_path: Path) -> Path:
    """A copy of the prepared working directory (times kept: nothing in it is out of date)."""
    return shutil.copytree(prepared, tmp_path / "work", symlinks=True)


def _attempts(jobs: list[dict[str, str]], comment: str) -> list[dict[str, str]]:
    """The sacct records of one job's attempts (its SLURM jobs, by the plugin's comment)."""
    return [job for job in jobs if job["Comment"] == comment]


def _held_jobs(workdir: Path, handle):
    """A `watch` for `_run_through_slurm`: calls ``handle(n, job id)`` once for each job of the
    run that is held in the queue (n = 1, 2, ... in the order they are seen)."""
    seen: list[str] = []

    def watch():
        for job in _queued(workdir):
            if job["Reason"] == "JobHeldUser" and job["JobID"] not in seen:
                seen.append(job["JobID"])
                handle(len(seen), job["JobID"])

    return watch


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def _release_to_fail(job_id: str) -> None:
    """Release a held job so that it fails on the node before its command starts: without the
    directory of its SLURM log, which is removed first, slurmstepd cannot open the log (state
    FAILED; the plugin makes the directory again for each submission)."""
    log = re.search(r"\bStdOut=(\S+)", _scontrol("show", "job", "-o", job_id))[1]
    shutil.rmtree(Path(log).parent)
    _scontrol("release", job_id)


def test_a_failed_job_is_retried_with_more_time(prepared, tmp_path):
    """profiles/slurm retries a failed job with a longer time limit: the first attempt of a mask
    training job fails on the node (as on a node with a broken file system), Snakemake resubmits
    it with twice the runtime, the second attempt succeeds and so does the run. Every attempt of
    that rule is submitted held (`--hold`): the first is made to fail before it is released, the
    second is released as it is, so this is deterministic however fast the machine is. The mask
    is λ = full (all ones, nothing to train) of the final checkpoint, its inputs `prepared`."""
    workdir = _copy(prepared, tmp_path)
    target = "results/masks/neox-test/step40/bigram/lam-full/seed-0/meta.json"

    def fail_first_release_second(n, job_id):
        if n == 1:
            _release_to_fail(job_id)
        else:
            _scontrol("release", job_id)

    args = ["--configfile", ROOT / ".test/config.yaml", "--set-resources"]
    args += ["train_mask:slurm_extra='--hold'", "--", target]
    watch = _held_jobs(workdir, fail_first_release_second)
    code, output, run_id = _run_through_slurm(workdir, *args, timeout_s=300, watch=watch)
    assert code == 0, output[-20000:]
    assert "Trying to restart job" in output, output[-20000:]
    assert (workdir / target).is_file()
    jobs = _sacct(run_id)
    attempts = _attempts(jobs, "rule_train_mask_wildcards_neox-test_step40_bigram_full_0")
    assert [job["State"] for job in attempts] == ["FAILED", "COMPLETED"], jobs
    # runtime 120 min on the first attempt, ×2 on the second; memory (not memory-bound) stays.
    assert [job["Timelimit"] for job in attempts] == ["02:00:00", "04:00:00"], attempts
    assert [job["ReqMem"] for job in attempts] == ["4000M", "4000M"], attempts
    assert attempts == jobs, jobs  # the inputs were up to date: nothing else ran


def test_retries_grow_the_runtime_and_memory_of_a_memory_bound_rule(slurm, tmp_path):
    """Each retry asks SLURM for more: runtime ×attempt and, for a memory-bound rule (overlap),
    mem_mb half the first attempt's more per retry; after the profile's 2 retries the job has
    failed for good and the run fails. No attempt runs its command (each is submitted held and
    released to fail, see `_release_to_fail`), so the overlap job's inputs are empty placeholders
    and only that rule is considered."""
    masks = "results/masks/llama-test/step40"
    for path in [f"{masks}/bigram/lam-1/seed-0", f"{masks}/optimal/lam-0.1/seed-0"]:
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "mask.safetensors").touch()
    (tmp_path / "results/models/llama-test/checkpoints").mkdir(parents=True)
    target = "results/overlap/llama-test/step40/bigram-1/optimal-0.1/seed-0/overlap.json"
    args = ["--configfile", ROOT / ".test/config.yaml", "--allowed-rules", "overlap"]
    args += ["--set-resources", "overlap:slurm_extra='--hold'", "--", target]
    watch = _held_jobs(tmp_path, lambda n, job_id: _release_to_fail(job_id))
    code, output, run_id = _run_through_slurm(tmp_path, *args, timeout_s=300, watch=watch)
    assert code != 0, output[-20000:]
    assert "Error in rule overlap" in output, output[-20000:]
    attempts = _sacct(run_id)
    assert {job["Comment"] for job in attempts} == {
        "rule_overlap_wildcards_llama-test_step40_1_0.1_0"
    }, attempts
    assert [job["State"] for job in attempts] == ["FAILED"] * 3, attempts
    assert [job["Timelimit"] for job in attempts] == ["01:00:00", "02:00:00", "03:00:00"]
    assert [job["ReqMem"] for job in attempts] == ["8000M", "12000M", "16000M"], attempts


def test_keep_going_runs_the_jobs_a_failed_one_does_not_block(prepared, tmp_path):
    """keep-going: one model's pretraining fails (an unreadable resume snapshot: an error naming
    the file), another model's runs all the same, and the run ends non-zero. One job at a time,
    the failing one first (--prioritize): the independent job is submitted only after the
    failure, which without keep-going would end the run. Without retries (the other tests' topic;
    each failed attempt here costs half a minute). Their tokens are `prepared`."""
    workdir = _copy(prepared, tmp_path)
    snapshot = workdir / "results/resume/pretrain/gpt2-test/state.pt"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"not a snapshot")
    failing = "results/models/gpt2-test/meta.json"
    independent = "results/models/llama-test/meta.json"
    args = ["--configfile", ROOT / ".test/config.yaml", "--jobs", "1", "--prioritize", failing]
    args += ["--retries", "0", "--", failing, independent]
    code, output, run_id = _run_through_slurm(workdir, *args, timeout_s=300)
    assert code != 0, output[-20000:]
    assert "cannot read the resume snapshot" in output, output[-20000:]
    assert (workdir / independent).is_file(), output[-20000:]
    assert not (workdir / failing).exists()
    jobs = _sacct(run_id)
    [failed] = _attempts(jobs, "rule_pretrain_wildcards_gpt2-test")
    [other] = _attempts(jobs, "rule_pretrain_wildcards_llama-test")
    assert (failed["State"], other["State"]) == ("FAILED", "COMPLETED"), jobs
    assert int(other["JobID"]) > int(failed["JobID"]), jobs  # submitted after the failure
