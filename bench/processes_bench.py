"""Throughput of data parallelism: ``--num-processes 2`` against one process, for training and for decoding.

Runs the real commands on one align system of an experiment that has run stages 1-4 (its text sets,
tokenizer, encoder and test split are copied into a scratch experiment, so nothing is written into the
original), in three set-ups that alternate round by round on the same machine:

- 1 process, 1 thread;
- 1 process, 2 threads (torch's intra-op parallelism on the same two cores);
- 2 processes, 1 thread each (``--num-processes 2``).

- ``align``: training items per second between the first and the last step, read from the run's
  ``train_log.jsonl`` (model loading and start-up are left out); each process takes ``batch_size`` items
  per micro-batch, so two processes train on twice the items per step.
- ``decode``: utterances per second of the system's own decoding, ``system_seconds`` of the split's
  ``summary.json`` (model loading and the encoder, which the main process runs before the work is shared,
  are left out; its posterior cache is filled once before the first round).

The fastest round of each set-up counts, since on a shared machine noise only ever adds time. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from speechllm_cli.stages.recipe import load_recipe

SPEECHLLM = Path(sys.executable).parent / "speechllm"
SETUPS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]
INPUTS = ["text", "tokenizer", "encoder/model", "encoder/encoder.json", "encoder/calibration"]
"""What a text-only align system reads (the calibration for calibrated mode); decoding also reads ``data``
(linked, read only) and the trained system."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run stages 1-4")
    parser.add_argument("--stage", choices=["align", "decode"], default="align", help="what to run on N processes")
    parser.add_argument("--system", default="tasu", help="align system in cps or calibrated mode")
    parser.add_argument("--steps", type=int, default=6, help="align: optimizer steps per run (the first is not timed)")
    parser.add_argument("--split", default="test_newvoice", help="decode: the test split decoded")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the fastest of each set-up counts")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, as for speechllm")
    return parser.parse_args(argv)


def scratch_experiment(source: Path, target: Path, stage: str, system: str) -> None:
    for name in INPUTS + ([f"align/{system}"] if stage == "decode" else []):
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns("checkpoint"))
        elif path.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
    if stage == "decode":
        (target / "data").symlink_to((source / "data").resolve())


def run_command(args: argparse.Namespace, exp: Path, processes: int, threads: int, overrides: list[str]) -> None:
    command = [str(SPEECHLLM), args.stage, "--recipe", args.recipe, "--exp-dir", str(exp), "--system", args.system,
               "--force", "--num-processes", str(processes), *(a for o in overrides for a in ("--set", o))]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")


def training_items_per_second(args: argparse.Namespace, exp: Path, processes: int, threads: int) -> float:
    """One align run of the system in ``exp``; training items per second after its first step."""
    train = load_recipe(args.recipe, args.sets).config.align.train
    overrides = [f"align.train.steps={args.steps}", "align.train.log_every=1",
                 f"align.train.checkpoint_every={args.steps}"]
    run_command(args, exp, processes, threads, [*args.sets, *overrides])
    log = [json.loads(line) for line in (exp / "align" / args.system / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    items = (last["step"] - first["step"]) * train.batch_size * train.grad_accum * processes
    return items / (last["seconds"] - first["seconds"])


def decoded_utterances_per_second(args: argparse.Namespace, exp: Path, processes: int, threads: int) -> float:
    """One decode run of the system on the split; utterances per second of the system's own decoding."""
    run_command(args, exp, processes, threads, [*args.sets, f"decode.splits=[{args.split}]"])
    summary = json.loads((exp / "decode" / args.system / args.split / "summary.json").read_text())
    return summary["num_utts"] / summary["system_seconds"]


MEASURES = {"align": (training_items_per_second, "training items/s"),
            "decode": (decoded_utterances_per_second, "decoded utterances/s")}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    measure, unit = MEASURES[args.stage]
    best = {name: 0.0 for name, _, _ in SETUPS}
    with tempfile.TemporaryDirectory(prefix="processes_bench.") as scratch:
        exp = Path(scratch) / "exp"
        scratch_experiment(args.exp_dir, exp, args.stage, args.system)
        if args.stage == "decode":
            measure(args, exp, 1, 2)  # fills the posterior cache, which every set-up then reads
        for round_number in range(args.rounds):
            for name, processes, threads in SETUPS:
                speed = measure(args, exp, processes, threads)
                best[name] = max(best[name], speed)
                print(f"round {round_number + 1}: {name}: {speed:.2f} {unit}", flush=True)
    what = f"{args.steps} steps" if args.stage == "align" else f"split {args.split}"
    print(f"\n# {args.stage}, system {args.system} of {args.exp_dir}: {what}")
    print(f"| set-up | {unit} |\n| --- | ---: |")
    for name, speed in best.items():
        print(f"| {name} | {speed:.2f} |")
    two, one, threaded = best[SETUPS[2][0]], best[SETUPS[0][0]], best[SETUPS[1][0]]
    print(f"\n2 processes over 1 process (1 thread each): {two / one:.2f}x; over 1 process with 2 threads: "
          f"{two / threaded:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
