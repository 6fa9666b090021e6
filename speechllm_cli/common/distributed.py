"""Several processes training or decoding together: how they are started, and the one rule for who writes.

``speechllm <stage> --num-processes N`` starts N copies of the same command (:func:`launch`) with the
environment torch.distributed reads (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), as ``torchrun`` or
``accelerate launch`` would; a command started by either of those behaves the same, and so does each task
of an ``srun`` step, whose SLURM variables are read as that environment (:func:`adopt_slurm`), so that
several nodes sharing a filesystem train as one job.

Process 0, the main process, runs a stage as a lone process would and is the only one that writes. The
others follow it unit by unit (``stages.runner``): they are told when the main process begins a unit's
joint work (its training, or its decoding split into shards) and only then run that unit themselves, so
whatever the unit prepared before (caches, converted models) is on disk for them to read; their part of the
unit ends with the joint work (:class:`JointWorkDone`), because saving, evaluating and the done marker are
the main process's. A unit without joint work is the main process's alone.

Module level stays free of torch: the CLI imports this to launch without loading a model library.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from typing import IO, Any

from speechllm_cli.common.errors import SpeechLLMError

JOINT_WORK = "joint work"
"""What the main process tells the others when a unit's joint work begins."""

WAIT = timedelta(days=1)
"""How long a process may wait for the others: the followers idle while the main process prepares, saves
or evaluates a unit alone, which on a large corpus takes far longer than torch's 30-minute default. A
process that fails stops the others (:func:`launch`), so this bounds only a hang."""

GRACE_SECONDS = 5.0
"""After one process fails, how long the others get to end by themselves: a process waiting for the
failed one learns of it and stops at once, and one failing alike says why on its own."""

_role: str | None = None
"""``lead`` or ``follow`` while the runner runs a unit on several processes, ``joined`` once the lead has
announced its joint work; None outside a unit."""


class JointWorkDone(Exception):  # noqa: N818 - an outcome, not an error
    """Ends a following process's part of a unit when the unit's joint work has finished."""


SLURM_PORT_BASE = 20000
"""The rendezvous port of an srun step is 20000 + the job id modulo 20000: the same on every node without
talking, and two jobs sharing a node rarely meet (set MASTER_PORT to choose it)."""


def adopt_slurm(environ: MutableMapping[str, str] = os.environ) -> None:
    """Give each task of an ``srun`` step the environment a launcher would: its rank, the step's task count,
    its GPU on the node, and the first node of the job as the rendezvous.

    Only inside a step of several tasks (SLURM_STEP_NUM_TASKS, which srun sets and a batch script's own shell
    lacks) and only where no launcher has set RANK: ``torchrun`` started by srun keeps its own numbering.
    """
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if "RANK" in environ or tasks < 2 or "SLURM_PROCID" not in environ:
        return
    nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "")
    environ.update({"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": str(tasks),
                    "LOCAL_RANK": environ.get("SLURM_LOCALID", "0")})
    environ.setdefault("MASTER_ADDR", first_host(nodes) or "127.0.0.1")
    environ.setdefault("MASTER_PORT", str(SLURM_PORT_BASE + int(environ.get("SLURM_JOB_ID", "0")) % SLURM_PORT_BASE))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[03-05,09],cpu1`` -> ``gpu03``), zero padding kept."""
    head = ""
    depth = 0
    for character in nodelist:
        if character == "," and depth == 0:
            break
        depth += {"[": 1, "]": -1}.get(character, 0)
        head += character
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    ranges, suffix = rest.split("]", 1)
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def cpu_only() -> bool:
    """Accelerate joins several processes on a machine without CUDA, and keeps a model off a GPU the recipe
    leaves alone (``device: cpu``), only when told to use the CPUs."""
    from speechllm_cli.common import device

    return not device.use_cuda()


def join() -> None:
    """Join the process group (once per process) with a wait long enough for a unit the main runs alone."""
    import torch.distributed
    from accelerate import PartialState

    if not torch.distributed.is_initialized():
        atexit.register(leave)
    PartialState(cpu=cpu_only(), timeout=WAIT)


def leave() -> None:
    """Leave the process group before the interpreter exits: a process that exits inside it can abort in
    the group's own threads ("terminate called without an active exception", SIGABRT), which turned a
    finished run into a failed one now and then."""
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def share(message: Any = None) -> Any:
    """The main process's ``message``, on every process (the others pass nothing); itself when alone."""
    if world_size() == 1:
        return message
    import torch.distributed

    box = [message]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def leading() -> Iterator[None]:
    """The main process runs a unit: its joint work, if any, tells the others to join."""
    global _role
    _role = "lead"
    try:
        yield
    finally:
        _role = None


@contextlib.contextmanager
def following() -> Iterator[None]:
    """Another process runs a unit the main process shares: up to the end of the joint work, nothing after."""
    global _role
    _role = "follow"
    try:
        yield
    except JointWorkDone:
        pass
    finally:
        _role = None


def joint_work_starts() -> None:
    """Called first by work every process shares (the training loop, sharded decoding): the main process
    calls the others in."""
    global _role
    if _role == "joined":
        raise SpeechLLMError("a unit of work is shared twice; on several processes a unit has one joint part")
    if _role == "lead":
        share(JOINT_WORK)
        _role = "joined"


def joint_work_ends() -> None:
    """Called last by the joint work: a following process's unit ends here."""
    if _role == "follow":
        raise JointWorkDone


def gather(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process; ``[value]`` when alone."""
    if world_size() == 1:
        return [value]
    import torch.distributed

    values: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """A launcher killed outright must not leave trainers behind that go on writing (Linux only; the launcher
    runs no threads, so a pre-exec hook is safe)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def launch(arguments: list[str], processes: int) -> int:
    """Run ``speechllm <arguments>`` as ``processes`` processes on this machine and return the exit code.

    The main process keeps the terminal; the others' output is held back. When one process fails, the rest
    are stopped (they would wait for it until :data:`WAIT`); the main process usually fails alike and has
    said why, otherwise the failed process's output is shown. Each gets an equal share of the cores unless
    OMP_NUM_THREADS says otherwise.
    """
    port = _free_port()
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    with contextlib.ExitStack() as stack:
        logs = [None] + [stack.enter_context(tempfile.TemporaryFile()) for _ in range(processes - 1)]
        children = [_start(arguments, number, processes, port, threads, log) for number, log in enumerate(logs)]
        try:
            failed = _first_failure(children)
        except KeyboardInterrupt:
            # the terminal interrupted every process; the main one says how to resume
            for child in children:
                child.wait()
            return 130
        if failed is None:
            return 0
        stopped = [child.poll() is None for child in children]
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
        if not stopped[0] and children[0].returncode != 0:
            failed = 0
        log = logs[failed]
        if log is not None:
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", errors="replace"))
        code = children[failed].returncode
        return code if code > 0 else 128 - code


def _start(arguments: list[str], number: int, processes: int, port: int, threads: str,
           log: IO[bytes] | None) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "RANK": str(number), "LOCAL_RANK": str(number), "WORLD_SIZE": str(processes),
                   "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    environment.setdefault("OMP_NUM_THREADS", threads)
    return subprocess.Popen(
        [sys.executable, "-m", "speechllm_cli", *arguments], env=environment,
        stdout=None if log is None else subprocess.DEVNULL, stderr=log,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509


def _first_failure(children: list[subprocess.Popen[bytes]]) -> int | None:
    """The rank of the first process to fail (the lowest of those failing together) once the others have
    ended too or had :data:`GRACE_SECONDS` to; None when all succeed."""
    while True:
        codes = [child.poll() for child in children]
        failed = next((number for number, code in enumerate(codes) if code not in (None, 0)), None)
        if failed is not None:
            deadline = time.time() + GRACE_SECONDS
            while time.time() < deadline and any(child.poll() is None for child in children):
                time.sleep(0.1)
            return failed
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)
