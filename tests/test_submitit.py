"""submitit_pretrain: the parser (every main's arguments, --main, defaults), the Trainer's
checkpoint/requeue, and real local submitit jobs that time out / are pre-empted, requeue and
finish from output_dir/checkpoint-last.pth. The stand-in main is tests/fake_main.py."""
import argparse
import json
import math
import os
import signal
import time

import pytest
import submitit

import submitit_pretrain as sp
from util.checkpoint import LAST, load_checkpoint, save_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = ["--main", "tests.fake_main"]
LOCAL_CPU = ["--cluster", "local", "--ngpus", "0"]


@pytest.fixture
def clean_env():
    """The Trainer sets RANK, WORLD_SIZE, ... in os.environ: give them back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def starts(output_dir):
    with open(os.path.join(output_dir, "starts.jsonl")) as f:
        return [json.loads(line) for line in f]


def last_step(output_dir):
    return load_checkpoint(os.path.join(output_dir, LAST))["step"]


def wait_for(condition, timeout_s, what):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout_s}s for {what}")


def stop_local_job(job, output_dir):
    """After a failed test: stop the local job. LocalJob.cancel() sends SIGINT, which a controller
    started from a non-interactive shell ignores, and submitit's tasks ignore SIGTERM: kill its tasks
    (their exit code is not 'requeue', so the controller ends), then the controller."""
    if job is None or job.state != "RUNNING":
        return
    try:
        pids = {r["pid"] for r in starts(output_dir)}
    except OSError:
        pids = set()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job._process.kill()


# ---------------------------------------------------------------- parser
def non_default_argv(parser):
    """An argv that sets every option of parser (to a non-default value where it can tell one)."""
    argv = []
    for a in parser._actions:
        if not a.option_strings or isinstance(a, argparse._HelpAction):
            continue
        opt = next(o for o in a.option_strings if o.startswith("--") and not o.startswith("--no-"))
        if isinstance(a, argparse.BooleanOptionalAction):
            argv.append(f"--no-{opt[2:]}" if a.default else opt)
        elif a.nargs == 0:  # store_true / store_false / store_const
            argv.append(opt)
        else:
            if a.choices:
                value = next((c for c in a.choices if c != a.default), a.default)
            elif a.type in (int, float) or getattr(a.type, "__name__", "") in ("int", "float"):  # util.args.bounded
                value = a.type("3") if a.default != 3 else a.type("4")
            elif a.type in (None, str):
                value = "x"
            else:  # a custom type: feed it its default back
                value = a.default if not isinstance(a.default, (list, tuple)) else a.default[0]
            n = a.nargs if isinstance(a.nargs, int) else 1
            argv += [opt] + [str(value)] * n
    return argv


def main_modules():
    """The fake main, and each real main_* once its file is in the repository."""
    names = ["tests.fake_main"]
    names += [m for m in sp.MAINS if os.path.isfile(os.path.join(REPO, f"{m}.py"))]
    return names


@pytest.mark.parametrize("name", main_modules())
def test_every_argument_of_the_main_is_accepted(name, tmp_path):
    module = sp.import_main(name)
    own = argparse.ArgumentParser(parents=[module.get_args_parser()])
    argv = non_default_argv(own) + ["--output_dir", str(tmp_path / "out"), "--device", "cpu"]
    expected = vars(own.parse_args(argv))
    _, args = sp.parse_args(["--main", name, *LOCAL_CPU, *argv])
    assert args.main == name
    for dest, value in expected.items():
        assert getattr(args, dest) == value, dest


def test_main_selects_the_module_and_its_arguments(capsys):
    module, args = sp.parse_args([*FAKE, "--steps", "7"])
    assert module.__name__ == "tests.fake_main" and args.steps == 7
    with pytest.raises(SystemExit):  # a pre-training option is not the fake main's
        sp.parse_args([*FAKE, "--mask_ratio", "0.9"])
    if os.path.isfile(os.path.join(REPO, "main_pretrain_siam.py")):
        module, args = sp.parse_args(["--mask_ratio", "0.9"])  # the default --main
        assert module.__name__ == "main_pretrain_siam" and args.mask_ratio == 0.9
        with pytest.raises(SystemExit):
            sp.parse_args(["--steps", "7"])
    assert sp.preparse_main(["--blr", "1e-4"]) == "main_pretrain_siam"
    assert sp.preparse_main(["--blr", "1e-4", "--main", "main_linprobe"]) == "main_linprobe"
    with pytest.raises(SystemExit, match="cannot import"):
        sp.parse_args(["--main", "no_such_main"])
    with pytest.raises(SystemExit):
        sp.parse_args([*FAKE, "--help"])
    out = capsys.readouterr().out
    assert "--steps" in out and "--partition" in out and "--cluster" in out


def test_job_dir_and_output_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, args = sp.parse_args(FAKE)
    assert args.job_dir == str(tmp_path / "jobs" / "%j")
    assert args.output_dir == args.job_dir  # the main's default output_dir -> the job dir
    _, args = sp.parse_args([*FAKE, "--output_dir", "runs/a", "--job_dir", "sub/%j"])
    assert args.output_dir == str(tmp_path / "runs" / "a") and args.job_dir == str(tmp_path / "sub" / "%j")


def test_device_follows_ngpus_and_invalid_combinations_are_refused():
    assert sp.parse_args(FAKE)[1].device == "cuda"  # --ngpus 8 (default): a GPU job, whatever runs the launcher
    assert sp.parse_args([*FAKE, *LOCAL_CPU])[1].device == "cpu"
    with pytest.raises(SystemExit):
        sp.parse_args([*FAKE, *LOCAL_CPU, "--device", "cuda:0"])
    with pytest.raises(SystemExit):  # SLURM needs GPUs; CPU runs are local/debug
        sp.parse_args([*FAKE, "--ngpus", "0"])
    with pytest.raises(SystemExit):
        sp.parse_args([*FAKE, *LOCAL_CPU, "--nodes", "2"])
    with pytest.raises(SystemExit):  # the USR2 signal would never come
        sp.parse_args([*FAKE, *LOCAL_CPU, "--timeout", "1", "--signal_delay_s", "60"])


def test_dry_run_shows_the_sbatch_script_and_submits_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    job = sp.launch([*FAKE, "--nodes", "2", "--ngpus", "4", "--timeout", "90.5", "--partition", "learn",
                     "--constraint", "volta32gb", "--comment", "a run", "--mem_gb", "100", "--dry_run"])
    assert job is None and not (tmp_path / "jobs").exists()
    out = capsys.readouterr().out
    for flag in ("--partition=learn", "--constraint=volta32gb", "--comment='a run'", "--nodes=2",
                 "--ntasks-per-node=4", "--gpus-per-node=4", f"--time={math.ceil(90.5)}", "--mem=100GB",
                 "--signal=USR2@120", str(tmp_path / "jobs" / "%j")):
        assert flag in out, flag
    assert "device = 'cuda'" in out


# ---------------------------------------------------------------- the Trainer
def local_job_env(monkeypatch, job_id):
    """Make submitit.JobEnvironment() inside this process a 1-task local job."""
    for k, v in dict(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID=str(job_id), SUBMITIT_LOCAL_NTASKS="1",
                     SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_GLOBALID="0",
                     SUBMITIT_LOCAL_LOCALID="0").items():
        monkeypatch.setenv(k, v)


def test_trainer_sets_up_distribution_and_checkpoint_requeues_a_resuming_trainer(tmp_path, monkeypatch, clean_env):
    local_job_env(monkeypatch, 4242)
    _, args = sp.parse_args([*FAKE, *LOCAL_CPU, "--job_dir", str(tmp_path / "jobs" / "%j"), "--steps", "3"])
    trainer = sp.Trainer(args)
    assert trainer() == {"steps": 3, "start": 0, "rank": 0}
    out = str(tmp_path / "jobs" / "4242")  # %j resolved with the job id
    assert trainer.args.output_dir == out and last_step(out) == 3
    first = starts(out)[0]
    assert first["env"] == {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": first["env"]["MASTER_ADDR"],
                            "MASTER_PORT": str(sp.master_port("4242"))}
    assert first["dist_url"] == "env://" and first["gpu"] == 0 and first["resume"] == ""

    # pre-empted after one step: the requeued Trainer is a fresh one that resumes from checkpoint-last
    save_atomic({"step": 1}, os.path.join(out, LAST))
    delayed = trainer.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, sp.Trainer) and delayed.function is not trainer
    assert delayed.function.args.resume == ""  # the main picks checkpoint-last.pth up itself
    assert delayed.function.args.output_dir == out and delayed.function.args.steps == 3
    delayed.dump(tmp_path / "requeued.pkl")  # as submitit does: through cloudpickle
    requeued = submitit.helpers.DelayedSubmission.load(tmp_path / "requeued.pkl")
    assert requeued.result() == {"steps": 3, "start": 1, "rank": 0}
    assert starts(out)[-1]["start"] == 1 and last_step(out) == 3


def test_checkpoint_without_a_checkpoint_file_keeps_resume(tmp_path):
    _, args = sp.parse_args([*FAKE, *LOCAL_CPU, "--output_dir", str(tmp_path), "--resume", "init.pth"])
    assert sp.Trainer(args).checkpoint().function.args.resume == "init.pth"


def test_local_jobs_requeue_at_most_as_often_as_submitits_local_controller_allows():
    assert sp.parse_args([*FAKE, *LOCAL_CPU])[1].max_num_timeout == sp.LOCAL_MAX_REQUEUES == 5
    assert sp.parse_args([*FAKE, "--ngpus", "1"])[1].max_num_timeout == 30  # SLURM
    assert sp.parse_args([*FAKE, *LOCAL_CPU, "--max_num_timeout", "2"])[1].max_num_timeout == 2
    with pytest.raises(SystemExit):
        sp.parse_args([*FAKE, *LOCAL_CPU, "--max_num_timeout", "30"])
    import inspect
    from submitit.local.local import Controller
    assert inspect.signature(Controller.run).parameters["max_retry"].default == sp.LOCAL_MAX_REQUEUES + 1


def test_the_launcher_leaves_resume_to_the_main(tmp_path, monkeypatch, clean_env):
    """--eval --resume X evaluates X even when output_dir holds a checkpoint-last.pth (the mains'
    rule): the Trainer passes --resume through unchanged, at the first start and at a requeue."""
    local_job_env(monkeypatch, 77)
    save_atomic({"step": 2}, str(tmp_path / LAST))
    _, args = sp.parse_args(["--main", "main_finetune", *LOCAL_CPU, "--output_dir", str(tmp_path), "--eval",
                             "--resume", "mae_finetuned.pth", "--data_path", "x"])
    seen = []
    monkeypatch.setattr(sp, "import_main", lambda name: argparse.Namespace(main=lambda a: seen.append(a.resume)))
    trainer = sp.Trainer(args)
    trainer()
    trainer.checkpoint().function()
    assert seen == ["mae_finetuned.pth", "mae_finetuned.pth"]
    import engine_finetune
    assert engine_finetune.resume_path(args) == "mae_finetuned.pth"


def test_debug_executor_runs_in_process(tmp_path, monkeypatch, clean_env):
    monkeypatch.chdir(tmp_path)
    job = sp.launch([*FAKE, "--cluster", "debug", "--ngpus", "0", "--steps", "2"])
    assert job.result() == {"steps": 2, "start": 0, "rank": 0}
    assert last_step(str(tmp_path / "jobs" / job.job_id)) == 2


def test_debug_job_with_bad_input_ends_in_one_line_not_in_the_debugger(tmp_path, monkeypatch, clean_env):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pdb.post_mortem", lambda *a: pytest.fail("submitit's debugger was entered"))
    with pytest.raises(SystemExit) as e:
        sp.launch([*FAKE, "--cluster", "debug", "--ngpus", "0", "--requires", "absent.pth"])
    assert e.value.code == "error: absent.pth: no such file"


@pytest.mark.parametrize("option", ["--job_dir", "--output_dir"])
def test_a_file_where_the_job_or_output_folder_goes_is_refused_at_submission(tmp_path, option, capsys):
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit):
        sp.launch([*FAKE, "--cluster", "debug", "--ngpus", "0", option, str(tmp_path / "afile" / "%j")])
    assert capsys.readouterr().err.strip().endswith(f"{option} {tmp_path}/afile/%j: {tmp_path}/afile is a file, "
                                                    "not a folder")


def test_slurm_submission_where_there_is_no_slurm_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sbatch nor srun
    with pytest.raises(SystemExit) as e:
        sp.launch([*FAKE, "--ngpus", "8"])
    assert "--cluster slurm: no 'sbatch' on this machine" in e.value.code
    assert not (tmp_path / "jobs").exists()  # nothing was written
    for tool in ("sbatch", "srun"):  # with both present, it gets past the check (and submitit's own) to sbatch
        (tmp_path / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / tool).chmod(0o755)
    with pytest.raises(submitit.core.utils.FailedJobError):  # this sbatch refuses every job
        sp.launch([*FAKE, "--ngpus", "8"])


# ---------------------------------------------------------------- real local jobs
def test_local_job_times_out_requeues_and_finishes_from_its_checkpoint(tmp_path, monkeypatch, clean_env):
    """timeout 0.3 min, signal 8 s before it: submitit's local controller sends USR2 ~10 s after each
    start; the job (24 x 0.5 s of 'training', 2 s more than the
    signal's 10 s whatever its start-up time) cannot finish in one go. Its checkpoint() requeues it
    (exit 144 -> the controller restarts it with the new pickle), and it resumes from checkpoint-last."""
    monkeypatch.chdir(tmp_path)  # the default job dir: ./jobs/%j
    job = None
    try:
        job = sp.launch([*FAKE, *LOCAL_CPU, "--timeout", "0.3", "--signal_delay_s", "8",
                         "--steps", "24", "--step_s", "0.5"])
        result = job.result()
    finally:
        stop_local_job(job, str(tmp_path / "jobs" / job.job_id) if job else "")
    out = str(tmp_path / "jobs" / job.job_id)
    assert job.paths.folder == tmp_path / "jobs" / job.job_id
    assert os.listdir(tmp_path / "jobs") == [job.job_id]  # not also the controller's empty 'jobs/%j'
    runs = starts(out)
    assert len(runs) >= 2, runs
    print("starts of the timed-out job:", [(r["start"], r["pid"]) for r in runs])
    assert runs[0]["start"] == 0 and runs[0]["resume"] == ""
    for earlier, later in zip(runs, runs[1:]):
        assert later["resume"] == os.path.join(out, LAST) and later["start"] >= max(earlier["start"], 1)
        assert later["pid"] != earlier["pid"] and later["env"]["MASTER_PORT"] == earlier["env"]["MASTER_PORT"]
    assert result == {"steps": 24, "start": runs[-1]["start"], "rank": 0}
    assert last_step(out) == 24
    log = open(job.paths.stdout).read()
    assert "Calling checkpoint method" in log and f"Requeued job {job.job_id}" in log
    assert "Caught signal SIGUSR2" in open(job.paths.stderr).read()


def test_local_job_preempted_by_signal_requeues_and_resumes(tmp_path, clean_env):
    """Pre-emption: USR2 sent to the running task (what SLURM does; LocalJob._interrupt would signal
    the controller process instead, which does not handle it)."""
    out = str(tmp_path / "out")
    job = None
    try:
        job = sp.launch([*FAKE, *LOCAL_CPU, "--job_dir", str(tmp_path / "jobs" / "%j"), "--output_dir", out,
                         "--timeout", "2", "--signal_delay_s", "30", "--steps", "20", "--step_s", "0.2"])
        wait_for(lambda: os.path.isfile(os.path.join(out, LAST)) and last_step(out) >= 3, 60, "3 steps")
        os.kill(starts(out)[0]["pid"], signal.SIGUSR2)
        result = job.result()
    finally:
        stop_local_job(job, out)
    runs = starts(out)
    assert len(runs) == 2 and runs[1]["start"] >= 3 and runs[1]["resume"] == os.path.join(out, LAST)
    assert result == {"steps": 20, "start": runs[1]["start"], "rank": 0} and last_step(out) == 20


def test_local_job_with_two_processes_sets_up_torch_distributed(tmp_path, clean_env):
    out = str(tmp_path / "out")
    job = None
    try:
        job = sp.launch([*FAKE, *LOCAL_CPU, "--tasks_per_node", "2", "--job_dir", str(tmp_path / "jobs" / "%j"),
                         "--output_dir", out, "--timeout", "1", "--signal_delay_s", "10", "--steps", "2",
                         "--dist_check"])
        results = job.results()
    finally:
        stop_local_job(job, out)
    assert sorted(r["rank"] for r in results) == [0, 1]
    runs = sorted(starts(out), key=lambda r: r["rank"])
    assert [r["env"]["LOCAL_RANK"] for r in runs] == ["0", "1"] and [r["gpu"] for r in runs] == [0, 1]
    assert all(r["world"] == 2 and r["sum_ranks_plus_one"] == 3 for r in runs)  # a real all-reduce
    assert runs[0]["env"]["MASTER_PORT"] == runs[1]["env"]["MASTER_PORT"] == str(sp.master_port(job.job_id))
