"""Training throughput of data parallelism: ``speechllm align --num-processes 2`` against one process.

Runs the real command on one align system of an experiment that has run stages 1-4 (its text sets,
tokenizer and encoder are copied into a scratch experiment, so nothing is written into the original),
in three set-ups that alternate round by round on the same machine:

- 1 process, 1 thread;
- 1 process, 2 threads (torch's intra-op parallelism on the same two cores);
- 2 processes, 1 thread each (``--num-processes 2``).

Throughput is training items per second between the first and the last step, read from the run's
``train_log.jsonl`` (model loading and start-up are left out); each process takes ``batch_size`` items
per micro-batch, so two processes train on twice the items per step. The fastest round of each set-up
counts, since on a shared machine noise only ever adds time. See bench/README.md.
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
"""What a text-only align system reads (the calibration for calibrated mode)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run stages 1-4")
    parser.add_argument("--system", default="tasu", help="align system in cps or calibrated mode")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the fastest of each set-up counts")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, as for speechllm")
    return parser.parse_args(argv)


def scratch_experiment(source: Path, target: Path) -> None:
    for name in INPUTS:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name)
        elif path.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)


def items_per_second(args: argparse.Namespace, exp: Path, processes: int, threads: int, batch: int) -> float:
    """One align run of the system in ``exp``; training items per second after its first step."""
    overrides = [*args.sets, f"align.train.steps={args.steps}", "align.train.log_every=1",
                 f"align.train.checkpoint_every={args.steps}"]
    command = [str(SPEECHLLM), "align", "--recipe", args.recipe, "--exp-dir", str(exp), "--system", args.system,
               "--force", "--num-processes", str(processes), *(a for o in overrides for a in ("--set", o))]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    log = [json.loads(line) for line in (exp / "align" / args.system / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    return (last["step"] - first["step"]) * batch * processes / (last["seconds"] - first["seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_recipe(args.recipe, args.sets).config.align
    batch = config.train.batch_size * config.train.grad_accum
    best = {name: 0.0 for name, _, _ in SETUPS}
    with tempfile.TemporaryDirectory(prefix="train_bench.") as scratch:
        exp = Path(scratch) / "exp"
        scratch_experiment(args.exp_dir, exp)
        for round_number in range(args.rounds):
            for name, processes, threads in SETUPS:
                speed = items_per_second(args, exp, processes, threads, batch)
                best[name] = max(best[name], speed)
                print(f"round {round_number + 1}: {name}: {speed:.2f} items/s", flush=True)
    print(f"\n# align system {args.system} of {args.exp_dir}: {args.steps} steps, batch {batch} per process")
    print("| set-up | items/s |\n| --- | ---: |")
    for name, speed in best.items():
        print(f"| {name} | {speed:.2f} |")
    two, one, threaded = best[SETUPS[2][0]], best[SETUPS[0][0]], best[SETUPS[1][0]]
    print(f"\n2 processes over 1 process (1 thread each): {two / one:.2f}x; over 1 process with 2 threads: "
          f"{two / threaded:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
