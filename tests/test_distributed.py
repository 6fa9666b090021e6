"""Data-parallel training on two CPU processes (gloo) is the training of one process on the same global batch.

Each test starts two real processes with torch.multiprocessing (the environment a launcher gives them:
RANK, WORLD_SIZE, MASTER_ADDR/PORT), runs the project's own loop (or stage runner) in both, and compares
what they saved with what one process does here. "The same global batch" is the same micro-batches:
two processes with grad_accum A train on the items one process sees with grad_accum 2A, and the loss of
a step is the mean of its micro-batches' losses in both.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

from speechllm_cli.common import distributed
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.core.training import TrainJob, load_verified, train, trainable_state
from tests.conftest import run_cli

PROCESSES = 2


def no_track(items: Iterable[int], total: int, description: str) -> Iterable[int]:
    return items


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process(rank: int, port: int, work: Callable[..., None], args: tuple[Any, ...]) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(PROCESSES),
                       "LOCAL_WORLD_SIZE": str(PROCESSES), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    try:
        work(rank, *args)
    finally:
        distributed.leave()  # what the command does at exit (multiprocessing's children skip atexit)


def _on_two_processes(work: Callable[..., None], *args: Any) -> None:
    """``work(rank, *args)`` in two fresh processes joined as one job; an exception in either fails the test."""
    torch.multiprocessing.spawn(_process, args=(_free_port(), work, args), nprocs=PROCESSES)


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(trainable_state(model), str(path))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert (tensor - theirs[name]).abs().max() <= atol, name


def _log(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


# -- the speech LLM: text and simulated posteriors through the projector and a LoRA-wrapped LLM ------------

UNITS = 12
"""The stand-in CTC unit inventory that simulated posteriors are drawn over."""

LLM_CONFIG = TrainConfig(steps=3, batch_size=2, grad_accum=1, lr=0.01, warmup_steps=1, checkpoint_every=3,
                         log_every=1, sort_window=2)


def _speech_llm_job(out_dir: Path) -> TrainJob:
    """A tiny random Llama with LoRA and a TASU projector, fed by the project's collate and loss.

    Text items are longer than CPS items, so most micro-batches hold one kind only: a text-only micro-batch
    leaves the projector without a gradient on that process.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechllm_cli.core import feeds
    from speechllm_cli.core.posteriors import CPSConfig
    from speechllm_cli.core.projector import ProjectorConfig, TasuMLP
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    llm = LlamaForCausalLM(config).requires_grad_(False)
    llm = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    projector = TasuMLP(UNITS, 32, ProjectorConfig(hidden=16))
    model = SpeechLLM(llm, projector, Prompt(prefix=[1, 2], suffix=[3], end_of_turn=5), pad_id=0)
    draw = torch.Generator().manual_seed(1)

    def ids(low: int, high: int, count: int) -> list[int]:
        return torch.randint(low, high, (count,), generator=draw).tolist()

    items = [feeds.Example("cps", ids(1, UNITS, 2 + i % 4), ids(6, 64, 3 + i % 3)) for i in range(10)]
    items += [feeds.Example("text", ids(6, 64, 8 + i % 3), ids(6, 64, 2 + i % 4)) for i in range(6)]
    collate = feeds.collate_fn(feeds.tasu_cps(UNITS, CPSConfig()))
    return TrainJob(model, items, [len(e) for e in items], collate, feeds.loss, out_dir)


def _train_speech_llm(rank: int, out_dir: Path) -> None:
    job = _speech_llm_job(out_dir)
    train(job, LLM_CONFIG, no_track)
    _save_weights(job.model, out_dir / f"weights-{rank}.safetensors")


def test_two_processes_train_a_speech_llm_as_one_process_does_on_the_same_global_batch(tmp_path: Path) -> None:
    """Weights (every process's), Adam moments, logged losses and learning rates after three steps."""
    two, one = tmp_path / "two", tmp_path / "one"
    _on_two_processes(_train_speech_llm, two)
    job = _speech_llm_job(one)
    train(job, LLM_CONFIG.model_copy(update={"grad_accum": PROCESSES}), no_track)

    alone = trainable_state(job.model)
    assert any(name.startswith("projector.") for name in alone) and any("lora_" in name for name in alone)
    initial = trainable_state(_speech_llm_job(tmp_path / "unused").model)
    assert all(not torch.equal(alone[name], initial[name]) for name in alone), "a parameter did not train"
    for rank in range(PROCESSES):
        _assert_close(_weights(two / f"weights-{rank}.safetensors"), alone)
    moments = [{k: v for k, v in load_verified(run / "checkpoint/step-3")[0].items() if k.startswith("optimizer.")}
               for run in (two, one)]
    _assert_close(*moments)
    assert [r["step"] for r in _log(two)] == [1, 2, 3]
    assert [r["lr"] for r in _log(two)] == [r["lr"] for r in _log(one)] == pytest.approx([0.01, 0.005, 0.0])
    assert [r["loss"] for r in _log(two)] == pytest.approx([r["loss"] for r in _log(one)], abs=2e-5)


# -- gradients by hand: a linear model whose gradient is its input ------------------------------------------

def _linear_job(out_dir: Path, count: int, crash_at: int | None = None) -> TrainJob:
    """loss = mean of w . x over the micro-batch, so a micro-batch's gradient is the mean of its x.

    The dropout makes every process draw random numbers, as many as its micro-batches have items: with an
    odd ``count`` the processes' draws differ, and a resume must restore each one's own."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(2, 1, bias=False))
    items = [torch.tensor([1.0, 2.0]) if i % 2 == 0 else torch.tensor([3.0, 0.0]) for i in range(count)]
    calls = {"n": 0}

    def loss(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if crash_at is not None and calls["n"] > crash_at:
            raise InterruptedError
        return m(x).mean()

    def collate(batch: list[torch.Tensor], generator: torch.Generator, progress: float) -> torch.Tensor:
        return torch.stack(batch)

    return TrainJob(model, items, [int(x[1]) for x in items], collate, loss, out_dir)


def _one_step(rank: int, out_dir: Path) -> None:
    job = _linear_job(out_dir, 2)
    job.model[0].p = 0.0
    train(job, TrainConfig(steps=1, batch_size=1, grad_accum=1, warmup_steps=0, grad_clip=1e9), no_track)
    _save_weights(job.model, out_dir / f"weights-{rank}.safetensors")


def test_gradients_are_averaged_across_processes(tmp_path: Path) -> None:
    """One item per process, x = (1, 2) on one and (3, 0) on the other: each process's gradient is its x,
    the step's is their mean (2, 1), which Adam's first moment after one step holds as 0.1 x gradient."""
    _on_two_processes(_one_step, tmp_path)
    tensors, _ = load_verified(tmp_path / "checkpoint/step-1")
    assert torch.allclose(tensors["optimizer.state.0.exp_avg"], torch.tensor([[0.2, 0.1]]))
    assert torch.allclose(tensors["optimizer.state.0.exp_avg_sq"], 0.001 * torch.tensor([[4.0, 1.0]]))
    _assert_close(_weights(tmp_path / "weights-0.safetensors"), _weights(tmp_path / "weights-1.safetensors"), 0.0)


RESUME_CONFIG = TrainConfig(steps=8, batch_size=2, lr=0.05, warmup_steps=1, checkpoint_every=3)


def _crash_and_resume(rank: int, root: Path) -> None:
    job = _linear_job(root / "whole", 3)
    train(job, RESUME_CONFIG, no_track)
    _save_weights(job.model, root / f"whole-{rank}.safetensors")
    with pytest.raises(InterruptedError):
        train(_linear_job(root / "resumed", 3, crash_at=7), RESUME_CONFIG, no_track)
    job = _linear_job(root / "resumed", 3)
    report = train(job, RESUME_CONFIG, no_track)
    assert report.resumed_from == 6
    _save_weights(job.model, root / f"resumed-{rank}.safetensors")


def test_a_crashed_two_process_run_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    """Crashed in step 8 after its step-6 checkpoint; every process resumes its own dropout draws."""
    _on_two_processes(_crash_and_resume, tmp_path)
    tensors, _ = load_verified(tmp_path / "resumed/checkpoint/step-6")
    assert not torch.equal(tensors["rng.torch"], tensors["rank1.rng.torch"])
    for rank in range(PROCESSES):
        _assert_close(_weights(tmp_path / f"resumed-{rank}.safetensors"),
                      _weights(tmp_path / f"whole-{rank}.safetensors"), 0.0)


# -- the stage runner: the main process writes, the other follows ------------------------------------------

def _note(notes: Path, rank: int, what: str) -> None:
    with (notes / f"rank-{rank}.txt").open("a", encoding="utf-8") as handle:
        handle.write(what + "\n")


def _units(exp: Path, notes: Path, rank: int) -> list[Any]:
    from speechllm_cli.common.io import write_json
    from speechllm_cli.stages.runner import Unit

    def trained() -> dict[str, Any]:
        folder = exp / "trained"
        prepared = folder / "prepared.json"
        _note(notes, rank, f"trained: {'reads' if prepared.exists() else 'writes'} prepared.json")
        if not prepared.exists():
            write_json(prepared, {"items": 16})
        job = _linear_job(folder, 4)
        report = train(job, TrainConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=1), no_track)
        _note(notes, rank, "trained: saves")
        write_json(folder / "model.json", {"weight": job.model[1].weight.tolist()})
        return {"loss": report.last_loss}

    def plain() -> dict[str, Any]:
        _note(notes, rank, "plain: runs")
        write_json(exp / "plain" / "out.json", {"rank": rank})
        return {"rank": rank}

    return [Unit("trained", exp / "trained", {"a": 1}, [], trained), Unit("plain", exp / "plain", {"b": 2}, [], plain)]


def _run_twice(rank: int, exp: Path, notes: Path) -> None:
    from speechllm_cli.stages.recipe import RecipeConfig
    from speechllm_cli.stages.runner import Context, run_units

    context = Context(RecipeConfig(name="two"), exp)
    for attempt in ("first", "second"):
        outcomes = run_units(context, _units(exp, notes, rank))
        (notes / f"{attempt}-{rank}.json").write_text(json.dumps([[o.unit.name, o.stats, o.reused] for o in outcomes]))


def test_only_the_main_process_writes_and_both_see_the_same_outcomes(tmp_path: Path) -> None:
    exp, notes = tmp_path / "exp", tmp_path / "notes"
    notes.mkdir()
    _on_two_processes(_run_twice, exp, notes)

    assert (notes / "rank-0.txt").read_text().splitlines() == [
        "trained: writes prepared.json", "trained: saves", "plain: runs"]
    assert (notes / "rank-1.txt").read_text().splitlines() == ["trained: reads prepared.json"], \
        "the other process joins for the training only, after the main one prepared the unit"
    assert json.loads((exp / "plain/out.json").read_text()) == {"rank": 0}
    first = [json.loads((notes / f"first-{rank}.json").read_text()) for rank in range(PROCESSES)]
    second = [json.loads((notes / f"second-{rank}.json").read_text()) for rank in range(PROCESSES)]
    assert first[0] == first[1] and [reused for *_, reused in first[0]] == [False, False]
    assert second[0] == second[1] and [reused for *_, reused in second[0]] == [True, True]
    assert [stats for _, stats, _ in second[0]] == [stats for _, stats, _ in first[0]]
    assert [json.loads((exp / name / ".done").read_text())["stats"] for name, _, _ in first[0]] == [
        stats for _, stats, _ in first[0]]
    assert [r["step"] for r in _log(exp / "trained")] == [2]


# -- the command: speechllm train-encoder --num-processes 2 ------------------------------------------------

def test_num_processes_trains_a_stage_on_two_processes_through_the_command(tmp_path: Path) -> None:
    """The small train-encoder recipe of test_checkpoints (tones, a tiny Whisper's frozen front): the main
    process caches the front's outputs, both train, one writes; a rerun is up to date."""
    from speechllm_cli.stages import prepare_data, prepare_text
    from tests.test_checkpoints import _context, _recipe

    recipe = _recipe(tmp_path)
    prepare_data.run(_context(recipe, tmp_path / "exp"))
    prepare_text.run(_context(recipe, tmp_path / "exp"))
    command = ("train-encoder", "--recipe", recipe, "--exp-dir", tmp_path / "exp", "--set",
               "train_encoder.train.steps=2", "--num-processes", "2")

    first = run_cli(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    encoder = tmp_path / "exp/encoder"
    assert first.stdout.count("train-encoder: whisper-ctc, 2 steps") == 1
    assert (encoder / "model/model.safetensors").is_file()
    stats = json.loads((encoder / ".done").read_text())["stats"]
    assert stats["steps"] == 2 and stats["utterances"] == 8
    assert [r["step"] for r in _log(encoder)] == [2]
    assert not (encoder / "checkpoint/front_states").exists()

    again = run_cli(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout

    shutil.rmtree(encoder)
    failed = run_cli(*command[:-2], "--set", "train_encoder.train.lr=1e30", "--num-processes", "2", cwd=tmp_path)
    assert failed.returncode == 1
    assert [line for line in failed.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {encoder}: non-finite loss at step 2; kept the last good checkpoint (step 1)"]


# -- launched by others: srun's tasks and torchrun ------------------------------------------------------

def test_an_srun_task_gets_the_environment_a_launcher_gives() -> None:
    environ = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_JOB_ID": "123456",
               "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu1"}
    distributed.adopt_slurm(environ)
    assert {k: environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07", "MASTER_PORT": "23456"}


@pytest.mark.parametrize("environ", [
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n1"},  # the batch script's own shell
    {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "RANK": "5", "WORLD_SIZE": "8"},  # torchrun under srun
    {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"},  # a one-task step
])
def test_outside_a_step_of_several_tasks_nothing_is_adopted(environ: dict[str, str]) -> None:
    before = dict(environ)
    distributed.adopt_slurm(environ)
    assert environ == before


def _slurm_port() -> tuple[int, int]:
    """A free port the srun rule derives (20000 + job id % 20000), and that job id."""
    while True:
        port = _free_port()
        if 20000 <= port < 40000:
            return port, port - 20000


def _launched(commands: list[list[str]], environs: list[dict[str, str]], cwd: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT") and not k.startswith("SLURM_")}
    children = [subprocess.Popen(command, cwd=cwd, env={**clean, "OMP_NUM_THREADS": "1", **environ},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for command, environ in zip(commands, environs, strict=True)]
    outputs = [child.communicate(timeout=600) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr


def test_srun_tasks_and_torchrun_train_a_stage_as_num_processes_does(tmp_path: Path) -> None:
    """Two srun-shaped tasks, and torchrun's two processes, train the encoder head of test_checkpoints' small
    recipe to the weights ``--num-processes 2`` gives; only the main process writes."""
    from safetensors.torch import load_file

    from speechllm_cli.stages import prepare_data, prepare_text
    from tests.conftest import SPEECHLLM
    from tests.test_checkpoints import _context, _recipe

    recipe = _recipe(tmp_path)
    prepared = tmp_path / "prepared"
    prepare_data.run(_context(recipe, prepared))
    prepare_text.run(_context(recipe, prepared))
    stage = ["train-encoder", "--recipe", str(recipe), "--set", "train_encoder.train.steps=2"]
    folders = {name: tmp_path / name for name in ("ours", "srun", "torchrun")}
    for folder in folders.values():
        shutil.copytree(prepared, folder)
    ours = run_cli(*stage, "--exp-dir", folders["ours"], "--num-processes", "2", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr

    port, job = _slurm_port()
    task = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": str(job), "SLURM_JOB_NODELIST": "localhost"}
    _launched([[str(SPEECHLLM), *stage, "--exp-dir", str(folders["srun"])]] * 2,
              [{**task, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)} for i in range(2)], tmp_path)
    torchrun = SPEECHLLM.parent / "torchrun"
    _launched([[str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "--no-python",
                str(SPEECHLLM), *stage, "--exp-dir", str(folders["torchrun"])]], [{}], tmp_path)

    reference = load_file(str(folders["ours"] / "encoder/model/model.safetensors"))
    for name in ("srun", "torchrun"):
        encoder = folders[name] / "encoder"
        assert [r["step"] for r in _log(encoder)] == [2], name
        weights = load_file(str(encoder / "model/model.safetensors"))
        assert weights.keys() == reference.keys()
        for key, tensor in weights.items():
            assert (tensor - reference[key]).abs().max() < 1e-6, (name, key)


def test_run_on_two_processes_equals_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    """``speechllm run --num-processes 2`` through data, text and the encoder head: the main process prepares
    alone, both train; the outputs are one process's with twice the gradient accumulation."""
    from safetensors.torch import load_file

    from tests.test_checkpoints import _recipe

    recipe = _recipe(tmp_path)
    common = ("run", "--recipe", recipe, "--stop-stage", "3", "--set", "train_encoder.train.steps=2",
              "--set", "train_encoder.model.head.dropout=0")  # one process's dropout draws are not two's
    two = run_cli(*common, "--exp-dir", tmp_path / "two", "--num-processes", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    one = run_cli(*common, "--exp-dir", tmp_path / "one", "--set", "train_encoder.train.grad_accum=2", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.stdout.count("train-encoder: whisper-ctc, 2 steps") == 1
    for made in ("data", "text"):
        files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / made).rglob("*") if p.is_file())
        assert files and all((tmp_path / "two" / f).read_bytes() == (tmp_path / "one" / f).read_bytes()
                             for f in files if f.name not in (".done", "config.yaml"))
    losses = [[r["loss"] for r in _log(tmp_path / name / "encoder")] for name in ("two", "one")]
    assert len(losses[0]) == 1 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    ours = load_file(str(tmp_path / "two/encoder/model/model.safetensors"))
    theirs = load_file(str(tmp_path / "one/encoder/model/model.safetensors"))
    assert ours.keys() == theirs.keys()
    for key, tensor in ours.items():
        assert (tensor - theirs[key]).abs().max() < 1e-5, key
