"""What the posterior interface lets the LLM understand before any training, by the size of the unit inventory.

A speech LLM of the posterior interface reads one position per CTC unit, and the ``unit-lookup`` projector
starts as the LLM's own embedding of each unit's text. So the clean posteriors of a question (one unit per
position, one-hot) put the question to the LLM spelled in the encoder's units: how much of it the LLM still
understands bounds what text-only alignment starts from. For each inventory size, a sentencepiece BPE is
learnt on the recipe's text sets (as ``prepare-text`` learns the encoder's), and the recipe's LLM as it ships
(no adapter) answers a task split's questions given (a) as its own tokens and (b) as one-hot unit posteriors
through the lookup's start. Nothing is trained and nothing is written into the experiment. See bench/README.md.

    .venv/bin/python bench/unit_probe.py --recipe mini --exp-dir exp/mini --vocab 256 1000 4000
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import sentencepiece
import torch

from speechllm_cli.core.feeds import Example, generate_texts
from speechllm_cli.core.llm import encode_text, load_llm
from speechllm_cli.core.projector import UnitLookup, unit_text_embeddings
from speechllm_cli.core.speech_llm import SpeechLLM
from speechllm_cli.data.normalize import normalize
from speechllm_cli.metrics.qa import contains_answer
from speechllm_cli.stages.inputs import load_text_set, text_normalizer
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.speech_llm_io import llm_cache_dir, prompt_for


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mini", help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run prepare-text")
    parser.add_argument("--split", default="qa_test", help="a split of decode.tasks (its questions and answers)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[256, 1000, 4000], help="BPE inventory sizes")
    parser.add_argument("--text-sets", nargs="+", default=["train", "scripture_text", "commands_text", "trivia_text"],
                        help="text sets the BPE is learnt on (never the task split's)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, as for speechllm")
    return parser.parse_args(argv)


def learn_units(texts: list[str], vocab: int) -> sentencepiece.SentencePieceProcessor:
    """A BPE over ``texts`` with ``vocab`` pieces, learnt in memory (deterministic for the same texts)."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab,
                                             model_type="bpe", character_coverage=1.0, num_threads=1,
                                             minloglevel=2)
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    context = Context(load_recipe(args.recipe, args.sets).config, args.exp_dir)
    decode = context.config.decode
    task = decode.tasks[args.split]
    norm = text_normalizer(context)
    rows = load_text_set(context, task.text_set)
    answers = [normalize(row["target"], norm) for row in rows]
    texts = [row["text"] for name in args.text_sets for row in load_text_set(context, name)]
    model_config = context.config.model
    llm, tokenizer = load_llm(model_config.llm.model_copy(update={"lora": None}), llm_cache_dir())
    llm.eval()
    embeddings = llm.get_input_embeddings()
    prompt = prompt_for(tokenizer, task.instruction, model_config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prompt.end_of_turn
    llm_tokens = sum(len(encode_text(tokenizer, row["text"])) for row in rows)

    def accuracy(model: SpeechLLM, examples: list[Example], vocab: int) -> float:
        responses = generate_texts(model, tokenizer, examples, vocab, decode.batching, decode.generation,
                                   lambda items, total, description: items, "probe")
        right = sum(contains_answer(a, normalize(r, norm)) for a, r in zip(answers, responses, strict=True))
        return 100 * right / len(rows)

    print(f"# {len(rows)} questions of {args.split}, asked {task.instruction!r}; BPE learnt on "
          f"{len(texts)} sentences of {', '.join(args.text_sets)}")
    print("| input | units | positions per LLM token | answered % |\n| --- | ---: | ---: | ---: |")
    text_examples = [Example("text", encode_text(tokenizer, row["text"]), []) for row in rows]
    base = SpeechLLM(llm, UnitLookup(2, embeddings.embedding_dim, model_config.projector), prompt, pad)
    print(f"| the LLM's own tokens | - | 1.00 | {accuracy(base, text_examples, 2):.1f} |", flush=True)
    for vocab in args.vocab:
        units = learn_units(texts, vocab)
        pieces = [units.id_to_piece(i) for i in range(units.get_piece_size())]
        projector = UnitLookup(len(pieces), embeddings.embedding_dim, model_config.projector)
        projector.init_from_embeddings(unit_text_embeddings(pieces, tokenizer, embeddings))
        model = SpeechLLM(llm, projector, prompt, pad)
        ids = [units.encode(row["text"]) for row in rows]
        examples = [Example("speech", torch.nn.functional.one_hot(torch.tensor(i), len(pieces)).float(), [])
                    for i in ids]
        ratio = sum(map(len, ids)) / llm_tokens
        print(f"| one-hot units, unit-lookup start | {len(pieces)} | {ratio:.2f} | "
              f"{accuracy(model, examples, len(pieces)):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
