"""Where a speech LLM's understanding is lost: asked the spoken questions, and asked the same questions as
posteriors simulated from their text.

A system that answers from simulated posteriors of the question (content intact) but not from its speech has
learnt the behaviour and is starved of content by the encoder; one that answers from neither has not learnt
to carry content to the LLM at all. Both inputs go through the one decoding path (``SpeechLLMSystem``), asked
the task split's own instruction; the simulated input is TASU's CPS at its defaults, drawn from a fixed
generator (reproducible; label smoothing up to 0.1 and 5 % of the units deleted, whatever the recipe's
``model.cps``). A third column asks the question's text put where the speech goes (the system's own
reading of text). The system name ``original`` is the recipe's LLM as it ships behind a new projector (the
unit lookup's start, no training): what the interface itself passes on before any alignment. Prints a
markdown table.

    .venv/bin/python bench/content_probe.py --recipe mini --exp-dir exp/mini --systems original calibrated
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speechllm_cli.core.feeds import Example
from speechllm_cli.data.normalize import normalize
from speechllm_cli.metrics.qa import contains_answer
from speechllm_cli.stages.front_end import SpeechFrontEnd
from speechllm_cli.stages.inputs import load_text_set, text_normalizer
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.systems import original_llm, speech_llm_system, split_utterances

ORIGINAL = "original"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mini")
    parser.add_argument("--exp-dir", type=Path, required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="as speechllm's --set")
    parser.add_argument("--systems", nargs="+", required=True,
                        help=f"align or distill systems, or {ORIGINAL!r} (the LLM behind an untrained projector)")
    parser.add_argument("--split", default="qa_test", help="a split of decode.tasks")
    args = parser.parse_args()

    context = Context(load_recipe(args.recipe, args.sets).config, args.exp_dir)
    decode = context.config.decode
    task = decode.tasks[args.split]
    front = SpeechFrontEnd(context)
    norm = text_normalizer(context)
    rows = load_text_set(context, task.text_set)
    answers = [normalize(row["target"], norm) for row in rows]
    utterances = split_utterances(front, args.split, [row["id"] for row in rows])

    def accuracy(responses: list[str]) -> str:
        right = sum(contains_answer(a, normalize(r, norm)) for a, r in zip(answers, responses, strict=True))
        return f"{100 * right / len(rows):.1f}"

    print("| system | asked the speech (% right) | asked simulated posteriors of the text (% right) "
          "| asked the text (% right) |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.systems:
        system = (original_llm(context, front, decode.generation, decode.batching) if name == ORIGINAL
                  else speech_llm_system(context, front, name, decode.generation, decode.batching))
        spoken = system.transcribe(utterances, f"{name}: speech", task.instruction)
        simulated = system.answer([Example("cps", front.encoder.row_units(row), []) for row in rows],
                                  f"{name}: simulated", task.instruction)
        text = system.read([row["text"] for row in rows], f"{name}: text", task.instruction)
        print(f"| {name} | {accuracy(spoken)} | {accuracy(simulated)} | {accuracy(text)} |", flush=True)


if __name__ == "__main__":
    main()
