"""Peak memory of train-encoder or of the ``paired`` align system on a split and on one ``--scale`` times larger:
is it flat in the split's size?

Each measurement is a fresh process running the real stage (``train_encoder.run`` or ``align.run``) on its own
copy of the split, so nothing one run loaded is counted in another. ``--stage align`` trains the recipe's
``paired`` system alone (real posteriors of the split's speech) with the experiment's trained encoder; its
posteriors are encoded once per copy before the measured rounds, as the recipe's calibrate stage does.

The process reads its own high-water mark of resident memory (VmHWM) when training is handed the job (the end
of the caching step: manifest, model, audio and the frozen front's outputs; for align, the LLM and the training
items), then resets it (``/proc/self/clear_refs``) and reads it again after
the first ``--steps`` training steps (and the save of the model). The larger split repeats the cuts under
new ids over the same audio, so it costs no disk and every utterance is computed again.

``--baseline DIR`` runs the same measurements on another checkout (e.g. the main branch before a change) in
the same run, so both sides share the machine's state.

Measures only: it asserts nothing and writes nothing outside ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _peak_kb() -> int:
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))


def _reset_peak() -> None:
    """The high-water mark restarts from the current resident size (Linux's clear_refs value 5)."""
    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")


def _child(stage: str, recipe: str, exp: Path, sets: list[str]) -> dict[str, Any]:
    """One run of ``stage`` in this process, with the peaks of its caching step and of its first steps."""
    import torch

    from speechllm_cli.core import training
    from speechllm_cli.stages import align, train_encoder
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context

    torch.set_num_threads(1)
    started = time.time()
    marks: dict[str, Any] = {}
    real_train = training.train

    def measured(job: training.TrainJob, config: Any, track: Any) -> training.TrainReport:
        marks["caching_kb"], marks["caching_seconds"] = _peak_kb(), round(time.time() - started, 1)
        marks["utterances"] = len(job.items)
        _reset_peak()
        return real_train(job, config, track)

    training.train = measured
    {"train-encoder": train_encoder, "align": align}[stage].run(Context(load_recipe(recipe, sets).config, exp))
    marks["training_kb"] = _peak_kb()
    return marks


def _copy_split(source: Path, work: Path, split: str, text_set: str, limit: int | None, scale: int,
                encoder: bool) -> Path:
    """An experiment folder holding the first ``limit`` cuts of ``split`` repeated ``scale`` times (new ids, the
    same audio named by absolute path), their transcripts, the tokenizer and with ``encoder`` the trained
    encoder."""
    from lhotse import CutSet

    exp = work / f"x{scale}"
    shutil.rmtree(exp, ignore_errors=True)
    cuts = CutSet.from_file(source / "data" / split / "cuts.jsonl.gz").with_recording_path_prefix(str(source))
    cuts = cuts.subset(first=limit).to_eager() if limit else cuts.to_eager()
    rows = {row["id"]: row for row in map(json.loads, (source / "text" / f"{text_set}.jsonl").open(encoding="utf-8"))}
    copies = [(cut, k) for k in range(scale) for cut in cuts]
    (exp / "data" / split).mkdir(parents=True)
    CutSet.from_cuts(cut.with_id(f"{cut.id}-x{k}") for cut, k in copies).to_file(exp / "data" / split / "cuts.jsonl.gz")
    (exp / "text").mkdir()
    with (exp / "text" / f"{text_set}.jsonl").open("w", encoding="utf-8") as handle:
        for cut, k in copies:
            if cut.id in rows:
                handle.write(json.dumps({**rows[cut.id], "id": f"{cut.id}-x{k}"}) + "\n")
    shutil.copytree(source / "tokenizer", exp / "tokenizer")
    if encoder:
        (exp / "encoder").mkdir()
        shutil.copytree(source / "encoder" / "model", exp / "encoder" / "model")
        shutil.copy(source / "encoder" / "encoder.json", exp / "encoder" / "encoder.json")
    return exp


def _measure(tree: Path, stage: str, recipe: str, exp: Path, sets: list[str]) -> dict[str, Any]:
    """A fresh process's peaks; what the stage wrote is removed (the align posteriors cache stays: it is the
    split's, encoded once)."""
    written = exp / ("encoder" if stage == "train-encoder" else "align")
    shutil.rmtree(written, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--stage", stage, "--recipe", recipe,
               "--exp-dir", str(exp)]
    command += [arg for item in sets for arg in ("--set", item)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(written, ignore_errors=True)
    if result.returncode != 0:
        sys.exit(f"{tree}: {stage} failed on {exp}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MB"


def _summary(runs: list[dict[str, Any]], key: str) -> tuple[float, str]:
    """The median over rounds, and the figure with the range when there are several."""
    values = sorted(run[key] for run in runs)
    median = statistics.median(values)
    spread = f" ({_mb(values[0])}-{_mb(values[-1])})" if len(values) > 1 else ""
    return median, _mb(median) + spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["train-encoder", "align"], default="train-encoder",
                        help="align: the recipe's paired system alone")
    parser.add_argument("--recipe", default=str(REPO / "recipes/mini/config.yaml"))
    parser.add_argument("--exp-dir", type=Path, help="an experiment with the split, its text set and tokenizer")
    parser.add_argument("--work", type=Path, default=Path("/tmp/membench"), help="scratch folder for the copies")
    parser.add_argument("--split", default="train")
    parser.add_argument("--text-set", default="train")
    parser.add_argument("--limit", type=int, help="the split's first N utterances only")
    parser.add_argument("--scale", type=int, default=4, help="how many times larger the second split is")
    parser.add_argument("--steps", type=int, default=20, help="training steps measured after caching")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each size (the median counts)")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe overrides")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.stage, args.recipe, args.exp_dir, args.sets)))
        return
    if args.exp_dir is None:
        parser.error("--exp-dir is required")
    section = "train_encoder" if args.stage == "train-encoder" else "align"
    if args.stage == "align":
        args.sets.append(f"align.systems={{paired: {{mode: paired, split: {args.split}, "
                         f"text_sets: [{args.text_set}]}}}}")

    def steps(count: int) -> list[str]:
        return [*args.sets, f"{section}.train.steps={count}", f"{section}.train.checkpoint_every={count}"]

    sets = steps(args.steps)
    args.work.mkdir(parents=True, exist_ok=True)
    scales = (1, args.scale)
    exps = {scale: _copy_split(args.exp_dir.resolve(), args.work, args.split, args.text_set, args.limit, scale,
                               args.stage == "align") for scale in scales}
    if args.stage == "align":
        for exp in exps.values():
            _measure(REPO, args.stage, args.recipe, exp, steps(1))
    trees = {"this tree": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(name, scale): [] for name in trees for scale in scales}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            for scale in scales if round_ % 2 == 0 else scales[::-1]:
                runs[name, scale].append(_measure(tree, args.stage, args.recipe, exps[scale], sets))
    print(f"{args.stage} on {args.recipe} ({args.split}{f', first {args.limit}' if args.limit else ''} and "
          f"x{args.scale}), {args.steps} training steps, one thread, peak RSS: median of {args.rounds} (range)")
    print(f"| code | what | 1x | {args.scale}x | {args.scale}x / 1x |")
    print("|---|---|---|---|---|")
    for name, tree in trees.items():
        small, large = runs[name, 1], runs[name, args.scale]
        for what, key in (("caching step", "caching_kb"), (f"first {args.steps} steps", "training_kb")):
            (small_kb, small_text), (large_kb, large_text) = _summary(small, key), _summary(large, key)
            print(f"| {name} ({tree}) | {what} | {small_text} | {large_text} | {large_kb / small_kb:.2f} |")
        seconds = [statistics.median(run["caching_seconds"] for run in side) for side in (small, large)]
        print(f"| {name} ({tree}) | utterances, seconds to the end of caching | {small[0]['utterances']}, "
              f"{seconds[0]:.0f} s | {large[0]['utterances']}, {seconds[1]:.0f} s | |")


if __name__ == "__main__":
    main()
