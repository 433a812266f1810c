"""Launch a training script (main_pretrain_siam, main_finetune, main_linprobe) through submitit:
on SLURM, as a local background job, or in-process for debugging.

    python submitit_pretrain.py --nodes 2 --ngpus 8 --partition learn --data_path /videos ...
    python submitit_pretrain.py --main main_finetune --finetune jobs/123/checkpoint-last.pth ...
    python submitit_pretrain.py --cluster local --ngpus 0 --timeout 30 --data_path demo ...

Every argument of the selected main is accepted as well. The job runs ``main_module.main(args)``
with torch.distributed configured through environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT; dist_url='env://'). On pre-emption or time-out, submitit calls
``Trainer.checkpoint()``, which requeues a fresh Trainer with the same arguments; the requeued job
continues from ``output_dir/checkpoint-last.pth``, the file every main saves and resumes from.
"""
import argparse
import contextlib
import copy
import importlib
import math
import os
import shutil
import sys

import submitit

from util.checkpoint import find_resume
from util.misc import master_port
from util.optim import USER_ERRORS, one_line

CODE_DIR = os.path.dirname(os.path.abspath(__file__))
MAINS = ("main_pretrain_siam", "main_finetune", "main_linprobe")
DEFAULT_MAIN = "main_pretrain_siam"
DEFAULT_JOB_DIR = os.path.join("jobs", "%j")
LOCAL_MAX_REQUEUES = 5  # submitit's local controller starts a job at most 6 times (submitit.local.local.Controller.run)


# ---------------------------------------------------------------- arguments
def preparse_main(argv):
    """The --main value of argv (before the full parser, which depends on it, can be built)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--main", default=DEFAULT_MAIN)
    known, _ = pre.parse_known_args(argv)
    return known.main


def import_main(name):
    """Import a main module: one of MAINS, or any importable module exposing get_args_parser() and
    main(args)."""
    if CODE_DIR not in sys.path:
        sys.path.insert(0, CODE_DIR)
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise SystemExit(f"--main {name}: cannot import it ({e}); expected one of {', '.join(MAINS)}")
    missing = [f for f in ("get_args_parser", "main") if not callable(getattr(module, f, None))]
    if missing:
        raise SystemExit(f"--main {name}: the module has no {' or '.join(missing)}()")
    return module


def get_args_parser(main_module):
    parser = argparse.ArgumentParser(f"submitit launcher for {main_module.__name__}",
                                     parents=[main_module.get_args_parser()])
    g = parser.add_argument_group("launcher (submitit)")
    g.add_argument("--main", default=DEFAULT_MAIN,
                   help=f"the training script to run: {' | '.join(MAINS)} (default {DEFAULT_MAIN})")
    g.add_argument("--cluster", default="slurm", choices=["slurm", "local", "debug"],
                   help="slurm: sbatch; local: a background process on this machine (one node); "
                        "debug: in this process, at once (no time limit, no requeue)")
    g.add_argument("--ngpus", default=8, type=int, help="GPUs per node (0: CPU, local/debug only)")
    g.add_argument("--nodes", default=1, type=int, help="nodes to request (local/debug: 1)")
    g.add_argument("--tasks_per_node", default=None, type=int,
                   help="processes per node (default: --ngpus, at least 1)")
    g.add_argument("--timeout", default=4320, type=float,
                   help="time limit of one job, in minutes (SLURM rounds up to whole minutes); "
                        "the job checkpoints and requeues itself when it is reached")
    g.add_argument("--job_dir", default=DEFAULT_JOB_DIR,
                   help="submitit's folder for logs and pickles; %%j is the job id "
                        "(default ./jobs/%%j under the current directory)")
    g.add_argument("--job_name", default=None, help="default: siammae_<main>")
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--qos", default=None, help="SLURM quality of service")
    g.add_argument("--comment", default=None, help="SLURM comment")
    g.add_argument("--constraint", default=None, help="SLURM constraint, e.g. volta32gb")
    g.add_argument("--mem_gb", default=None, type=float,
                   help="SLURM memory per node in GB (default 40 per GPU; 0: let SLURM decide)")
    g.add_argument("--cpus_per_task", default=10, type=int, help="SLURM CPUs per process")
    g.add_argument("--signal_delay_s", default=120, type=int,
                   help="the checkpoint/requeue signal (USR2) comes this long before the time limit")
    g.add_argument("--max_num_timeout", default=None, type=int,
                   help=f"how many times a timed-out or pre-empted job requeues itself at most (default 30; "
                        f"--cluster local: {LOCAL_MAX_REQUEUES}, the most submitit's local controller restarts a job)")
    g.add_argument("--dry_run", action="store_true", help="print what would be submitted, submit nothing")
    return parser


def parse_args(argv=None):
    """(main_module, args) from the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    module = import_main(preparse_main(argv))
    parser = get_args_parser(module)
    args = parser.parse_args(argv)
    finish_args(args, parser)
    return module, args


def finish_args(args, parser):
    """Fill the launcher's derived defaults and check the combination of options."""
    if args.cluster == "slurm" and args.ngpus < 1:
        parser.error("--cluster slurm needs --ngpus >= 1 (use --cluster local or debug for a CPU run)")
    if args.cluster != "slurm" and args.nodes != 1:
        parser.error(f"--cluster {args.cluster} runs on this machine only: --nodes must be 1")
    if args.tasks_per_node is None:
        args.tasks_per_node = max(args.ngpus, 1)
    if args.cluster == "debug" and args.tasks_per_node != 1:
        parser.error("--cluster debug runs a single process: use --tasks_per_node 1 (or --ngpus 0/1)")
    if args.timeout <= 0:
        parser.error("--timeout must be positive (minutes)")
    most = LOCAL_MAX_REQUEUES if args.cluster == "local" else None
    if args.max_num_timeout is None:
        args.max_num_timeout = most or 30
    elif most is not None and args.max_num_timeout > most:
        parser.error(f"--cluster local requeues a job at most {most} times (submitit's local controller "
                     f"starts it 6 times in all): --max_num_timeout {args.max_num_timeout} cannot be kept")
    if args.cluster != "debug" and args.signal_delay_s >= args.timeout * 60:
        parser.error(f"--signal_delay_s {args.signal_delay_s} must be shorter than --timeout "
                     f"({args.timeout} min): the checkpoint signal comes that long before the limit")
    if args.job_name is None:
        args.job_name = "siammae_" + args.main.rsplit(".", 1)[-1].replace("main_", "")
    args.job_dir = os.path.abspath(args.job_dir)
    # output_dir: the job dir unless the user chose one; absolute, so the job finds it from anywhere
    if hasattr(args, "output_dir"):
        if args.output_dir == parser.get_default("output_dir"):
            args.output_dir = args.job_dir
        args.output_dir = os.path.abspath(args.output_dir)
    for option in ("job_dir", "output_dir"):
        blocked = file_in_the_way(getattr(args, option, None))
        if blocked:
            parser.error(f"--{option} {getattr(args, option)}: {blocked} is a file, not a folder")
    # the main's default --device was chosen on this (submitting) host, often a login node without
    # a GPU: decide from --ngpus instead, what the job will have
    if hasattr(args, "device"):
        if args.device == parser.get_default("device"):
            args.device = "cuda" if args.ngpus > 0 else "cpu"
        elif args.ngpus == 0 and str(args.device).startswith("cuda"):
            parser.error(f"--device {args.device} with --ngpus 0: the job has no GPU")
    return args


def file_in_the_way(path):
    """The file at path or at the nearest of its existing ancestors (the folder cannot be made), else None."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path if path and not os.path.isdir(path) else None


# ---------------------------------------------------------------- the job
class Trainer:
    """The callable submitit runs in every task of the job. It holds only the parsed arguments and
    the name of the main module, so it pickles small and the requeued copy is a fresh start."""

    def __init__(self, args):
        self.args = args

    def __call__(self):
        job_env = submitit.JobEnvironment()
        self._resolve_paths(job_env.job_id)
        args = copy.deepcopy(self.args)
        self._setup_distribution(args, job_env)
        print(f"{job_env}: running {args.main}.main in {os.getcwd()}, output_dir {args.output_dir}"
              + self._resume_note(args), flush=True)
        main = import_main(args.main).main
        if args.cluster != "debug":
            return main(args)
        try:  # in this process: bad input ends the run in one line, as the main's own command line does,
            return main(args)  # not in submitit's post-mortem debugger
        except USER_ERRORS as e:
            raise SystemExit(f"error: {one_line(e)}") from None

    def checkpoint(self):
        """Called by submitit (task 0) on the pre-emption/time-out signal: requeue a fresh Trainer
        with the same arguments. The mains themselves continue from output_dir/checkpoint-last.pth
        when it exists (and --eval from --resume first: the launcher leaves that choice to them), so
        the training state is whatever the main last saved."""
        print(f"checkpoint(): requeuing {self.args.main}" + self._resume_note(self.args), flush=True)
        return submitit.helpers.DelayedSubmission(type(self)(copy.deepcopy(self.args)))

    @staticmethod
    def _resume_note(args):
        if getattr(args, "eval", False):
            return ""
        path = find_resume(getattr(args, "output_dir", ""), getattr(args, "resume", ""))
        return f"; it resumes from {path}" if path else ""

    def _resolve_paths(self, job_id):
        """%j in output_dir/log_dir becomes the job id (the same after a requeue). job_dir stays as given:
        submitit's local controller makes that folder with '%j' unexpanded at each start; if empty, it goes."""
        literal = self.args.job_dir
        if self.args.cluster == "local" and "%j" in literal:
            with contextlib.suppress(OSError):  # not there, not empty, or removed by another task just now
                os.rmdir(literal)
        for name in ("output_dir", "log_dir"):
            value = getattr(self.args, name, None)
            if isinstance(value, str) and "%j" in value:
                setattr(self.args, name, value.replace("%j", str(job_id)))

    @staticmethod
    def _setup_distribution(args, job_env):
        os.environ["RANK"] = str(job_env.global_rank)
        os.environ["WORLD_SIZE"] = str(job_env.num_tasks)
        os.environ["LOCAL_RANK"] = str(job_env.local_rank)
        os.environ["MASTER_ADDR"] = job_env.hostnames[0]
        os.environ["MASTER_PORT"] = str(master_port(job_env.job_id))
        args.dist_url = "env://"
        args.gpu = job_env.local_rank
        args.rank, args.world_size = job_env.global_rank, job_env.num_tasks


# ---------------------------------------------------------------- submission
def executor_parameters(args):
    """(executor class name, constructor kwargs, update_parameters kwargs) for args.cluster."""
    if args.cluster == "debug":
        return "DebugExecutor", {}, {}
    if args.cluster == "local":
        return "LocalExecutor", {"max_num_timeout": args.max_num_timeout}, dict(
            timeout_min=args.timeout, gpus_per_node=args.ngpus, tasks_per_node=args.tasks_per_node,
            nodes=1, signal_delay_s=args.signal_delay_s)
    mem_gb = 40 * args.ngpus if args.mem_gb is None else args.mem_gb
    params = dict(job_name=args.job_name, time=int(math.ceil(args.timeout)), nodes=args.nodes,
                  ntasks_per_node=args.tasks_per_node, gpus_per_node=args.ngpus,
                  cpus_per_task=args.cpus_per_task, signal_delay_s=args.signal_delay_s,
                  mem=f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB",
                  partition=args.partition, account=args.account, qos=args.qos,
                  comment=args.comment, constraint=args.constraint)
    if not mem_gb:
        del params["mem"]
    return "SlurmExecutor", {"max_num_timeout": args.max_num_timeout}, \
        {k: v for k, v in params.items() if v is not None}


def make_executor(args):
    name, ctor, params = executor_parameters(args)
    missing = [c for c in ("sbatch", "srun") if name == "SlurmExecutor" and shutil.which(c) is None]
    if missing:
        raise SystemExit(f"--cluster slurm: no '{missing[0]}' on this machine (not a SLURM login node?): submit "
                         "from one, run here with --cluster local or debug, or print the job with --dry_run")
    executor = getattr(submitit, name)(folder=args.job_dir, **ctor)
    if params:
        executor.update_parameters(**params)
    return executor


def describe(args):
    """What --dry_run prints: the executor, its parameters (the sbatch script for SLURM) and the
    arguments the main will receive."""
    name, ctor, params = executor_parameters(args)
    lines = [f"would submit {args.main}.main through submitit.{name}({args.job_dir!r}"
             + "".join(f", {k}={v!r}" for k, v in ctor.items()) + ")"]
    if name == "SlurmExecutor":
        try:
            from submitit.slurm.slurm import _make_sbatch_string  # private: only to show the script
            command = f"{sys.executable} -u -m submitit.core._submit {args.job_dir}"
            lines += ["sbatch script:", _make_sbatch_string(command=command, folder=args.job_dir, **params)]
        except Exception as e:  # a submitit without that helper: the parameters are enough
            lines.append(f"parameters: {params} (no sbatch preview: {type(e).__name__})")
    elif params:
        lines.append(f"parameters: {params}")
    lines.append("main arguments:")
    lines += [f"  {k} = {v!r}" for k, v in sorted(vars(args).items())]
    return "\n".join(lines)


def export_code_dir():
    """Let the job's interpreter import this repository (the pickled Trainer and the main module),
    whatever directory the job starts in: local jobs and sbatch inherit this environment."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if CODE_DIR not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([CODE_DIR] + paths)


def submit(args):
    """Submit the Trainer; returns the submitit Job (a debug job has already run)."""
    export_code_dir()
    executor = make_executor(args)
    job = executor.submit(Trainer(args))
    if args.cluster == "debug":
        job.result()  # a debug job runs when its result is asked for
    return job


def report(job, args):
    folder = job.paths.folder
    out = getattr(args, "output_dir", "").replace("%j", str(job.job_id))
    return "\n".join([f"Submitted job {job.job_id} ({args.cluster}): {args.main}",
                      f"  logs:       {job.paths.stdout} (and .err) in {folder}",
                      f"  output_dir: {out}"])


def launch(argv=None):
    """Parse argv, then submit (or describe, with --dry_run). Returns the Job, or None."""
    _, args = parse_args(argv)
    if args.dry_run:
        print(describe(args))
        return None
    job = submit(args)
    print(report(job, args), flush=True)
    return job


if __name__ == "__main__":
    # Run through the importable module, so that the pickled Trainer refers to
    # submitit_pretrain.Trainer rather than to a class of __main__.
    import submitit_pretrain
    submitit_pretrain.launch()
