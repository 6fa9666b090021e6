"""``curriculum-finetune``: task fine-tuning under a speech budget, for any schedule of input kinds.

A run is a cell of a sweep: a track (which text, which speech, which test set), a scheme (a preset or a
schedule from the config) and a speech budget. Each phase of the cell's schedule is a unit of its own,
stored under a key made from everything that decides it (the phases before it included), so phases that
several cells share (the text phase of ``curriculum`` at every budget, ``text-only`` at every budget)
are trained once. After its last phase a cell's model is decoded on the track's test set twice, with
the speech and with the transcript as input: the two sides of the text-speech gap. ``score`` turns
those outputs into the SLU table and plot.
"""

from __future__ import annotations

from speechllm_cli.stages.curriculum.cells import Runner
from speechllm_cli.stages.curriculum.config import CurriculumConfig, cells
from speechllm_cli.stages.curriculum.records import curriculum_dir
from speechllm_cli.stages.runner import Context, StageResult


def run(context: Context) -> StageResult:
    config: CurriculumConfig = context.section("curriculum_finetune")
    runner = Runner(context, config)
    rows = []
    chosen = cells(config)
    for cell in chosen:
        record = runner.run_cell(cell)
        phases = " + ".join(",".join(p["inputs"]) + f" ({p['status']})" for p in record["phases"])
        rows.append([cell.name, str(record["speech_utterances"]), phases, record["evaluation"]["status"]])
    summary = f"curriculum-finetune: {len(chosen)} cells -> {curriculum_dir(context)}"
    return StageResult(summary, ["cell", "speech utts", "phases (inputs)", "evaluation"], rows)
