"""Would a reader of the posteriors into the LLM's own tokens, trained from text alone, let the frozen LLM
understand? (issue 23: the 256-unit interface reads as fragments the LLM cannot understand, bench/unit_probe.py)

A small transformer over the label-synchronous posteriors is trained with CTC to emit the LLM's own token ids
(those the training text uses), from the encoder's calibrated simulation of the recipe's text sets at random
error levels (0.5-1.5): no audio. Its collapsed output, as the expected LLM embedding at each emitted position
(soft) or the embedding of its best token (hard), is put to the frozen LLM where the speech goes, asked the
task split's instruction. Prints the reader's own WER on the spoken questions and the test splits, and the
share of questions answered from the question's text, from simulated posteriors of it at each error level,
and from its speech. Nothing is written into the experiment. A prototype: the reader is not a stage.

    .venv/bin/python bench/reader_probe.py --exp-dir exp/mini --steps 1200 --save /tmp/reader.pt
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import jiwer
import torch

from speechllm_cli.core.llm import encode_text, load_llm
from speechllm_cli.core.projector import UnitLookup
from speechllm_cli.core.speech_llm import SpeechLLM
from speechllm_cli.data.normalize import normalize
from speechllm_cli.metrics.qa import contains_answer
from speechllm_cli.stages.calibrate import calibrated_simulator
from speechllm_cli.stages.front_end import SpeechFrontEnd
from speechllm_cli.stages.inputs import load_cuts, load_text_set, text_normalizer
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.speech_llm_io import llm_cache_dir, prompt_for


class Reader(torch.nn.Module):
    def __init__(self, units: int, outputs: int, width: int, layers: int, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.inp = torch.nn.Linear(units, width)
        self.conv = torch.nn.Conv1d(width, width, 5, padding=2)
        layer = torch.nn.TransformerEncoderLayer(width, 4, 4 * width, 0.1, batch_first=True, norm_first=True)
        self.body = torch.nn.TransformerEncoder(layer, layers)
        self.out = torch.nn.Linear(width, outputs + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.repeat_interleave(self.upsample, dim=1)
        lengths = lengths * self.upsample
        h = self.inp(x)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        h = h + _positions(h.shape[1], h.shape[2])
        mask = torch.arange(h.shape[1])[None] >= lengths[:, None]
        h = self.body(h, src_key_padding_mask=mask)
        return self.out(h).log_softmax(-1), lengths


def _positions(length: int, width: int) -> torch.Tensor:
    position = torch.arange(length)[:, None]
    div = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


def collapse(log_probs: torch.Tensor, blank: int) -> list[int]:
    best = log_probs.argmax(-1).tolist()
    return [t for t, b in enumerate(best) if b != blank and (t == 0 or best[t - 1] != b)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mini", help="recipe name or folder, as for speechllm")
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment that has run calibrate")
    parser.add_argument("--text-sets", nargs="+", help="text sets the reader learns from (never a test split's)",
                        default=["train", "train_general", "scripture_text", "commands_text", "trivia_text"])
    parser.add_argument("--steps", type=int, default=1200, help="training steps")
    parser.add_argument("--batch", type=int, default=32, help="sentences per step")
    parser.add_argument("--width", type=int, default=256, help="the reader's model width")
    parser.add_argument("--layers", type=int, default=3, help="transformer layers")
    parser.add_argument("--upsample", type=int, default=1, help="repeat each position this often (CTC length)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, linear decay)")
    parser.add_argument("--save", type=Path, help="write the trained reader's weights here")
    parser.add_argument("--load", type=Path, help="read a trained reader's weights instead of training")
    parser.add_argument("--splits", nargs="*", default=["test_newvoice", "test_xdomain"],
                        help="test splits to give the reader's WER on")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 1.0],
                        help="error levels of the simulated questions")
    args = parser.parse_args()
    torch.manual_seed(0)

    context = Context(load_recipe(args.recipe, []).config, args.exp_dir)
    front = SpeechFrontEnd(context)
    encoder = front.encoder
    simulator = calibrated_simulator(context)
    model_config = context.config.model
    llm, tokenizer = load_llm(model_config.llm.model_copy(update={"lora": None}), llm_cache_dir())
    llm.eval()
    norm = text_normalizer(context)

    rows = [row for name in args.text_sets for row in load_text_set(context, name)]
    units = [encoder.row_units(row) for row in rows]
    targets = [encode_text(tokenizer, normalize(row["text"], norm)) for row in rows]
    vocab = sorted({t for ids in targets for t in ids})
    index = {t: i for i, t in enumerate(vocab)}
    blank = len(vocab)
    print(f"{len(rows)} sentences, {len(vocab)} LLM tokens used, {encoder.vocab_size} units", flush=True)
    reader = Reader(encoder.vocab_size, len(vocab), args.width, args.layers, args.upsample)
    if args.load:
        reader.load_state_dict(torch.load(args.load))
    else:
        optimizer = torch.optim.AdamW(reader.parameters(), lr=args.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / 100) * max(0.05, 1 - s / args.steps))
        ctc = torch.nn.CTCLoss(blank=blank, zero_infinity=True)
        generator = torch.Generator().manual_seed(1)
        started = time.time()
        reader.train()
        for step in range(args.steps):
            pick = torch.randint(len(rows), (args.batch,), generator=generator).tolist()
            level = 0.5 + torch.rand((), generator=generator).item()
            frames, lengths = simulator([units[i] for i in pick], generator, level)
            log_probs, out_lengths = reader(frames, lengths)
            target = [torch.tensor([index[t] for t in targets[i]]) for i in pick]
            loss = ctc(log_probs.transpose(0, 1), torch.cat(target), out_lengths,
                       torch.tensor([len(t) for t in target]))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 100 == 0 or step == args.steps - 1:
                print(f"step {step} loss {loss.item():.3f} {time.time() - started:.0f}s", flush=True)
        if args.save:
            torch.save(reader.state_dict(), args.save)
    reader.eval()

    table = llm.get_input_embeddings().weight[torch.tensor(vocab)].detach()

    def read(posteriors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[int]]]:
        soft, hard, ids = [], [], []
        with torch.no_grad():
            for p in posteriors:
                log_probs, _ = reader(p.float()[None], torch.tensor([p.shape[0]]))
                log_probs = log_probs[0]
                keep = collapse(log_probs, blank)
                probs = log_probs[keep, :blank].exp()
                probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-9)
                soft.append(probs @ table)
                best = probs.argmax(-1) if keep else torch.zeros(0, dtype=torch.long)
                hard.append(table[best])
                ids.append([vocab[i] for i in best.tolist()])
        return soft, hard, ids

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    decode = context.config.decode
    task = decode.tasks["qa_test"]
    qa = load_text_set(context, task.text_set)
    answers = [normalize(row["target"], norm) for row in qa]
    prompt = prompt_for(tokenizer, task.instruction, model_config)
    model = SpeechLLM(llm, UnitLookup(2, table.shape[1], model_config.projector), prompt, pad)

    def ask(inserted: list[torch.Tensor]) -> float:
        right = 0
        for start in range(0, len(inserted), 16):
            hyps = model.generate(inserted[start:start + 16], decode.generation)
            for answer, hyp in zip(answers[start:start + 16], hyps, strict=True):
                right += contains_answer(answer, normalize(tokenizer.decode(hyp), norm))
        return 100 * right / len(inserted)

    questions = [normalize(row["text"], norm) for row in qa]
    text_in = [model.embed_ids(encode_text(tokenizer, q)) for q in questions]
    spoken = front.split("qa_test")
    speech_post = [spoken[row["id"]].lsd for row in qa]
    s_soft, s_hard, s_ids = read(speech_post)
    hyp_text = [tokenizer.decode(i) for i in s_ids]
    print(f"qa speech reader WER {100 * jiwer.wer(questions, hyp_text):.2f} CER "
          f"{100 * jiwer.cer(questions, hyp_text):.2f}", flush=True)
    print("examples:", list(zip(questions[:5], hyp_text[:5])), flush=True)
    print(f"QA text {ask(text_in):.1f}", flush=True)
    for level in args.levels:
        generator = torch.Generator().manual_seed(5)
        simulated = []
        for row in qa:
            frames, lengths = simulator([encoder.row_units(row)], generator, level)
            simulated.append(frames[0, : int(lengths[0])])
        m_soft, m_hard, m_ids = read(simulated)
        m_text = [tokenizer.decode(i) for i in m_ids]
        print(f"simulated level {level}: reader WER {100 * jiwer.wer(questions, m_text):.2f}; "
              f"QA soft {ask(m_soft):.1f} hard {ask(m_hard):.1f}", flush=True)
    print(f"QA speech soft {ask(s_soft):.1f} hard {ask(s_hard):.1f}", flush=True)
    for split in args.splits:
        encoded = front.split(split)
        cuts = list(load_cuts(context, split))
        refs = [normalize(c.supervisions[0].text, norm) for c in cuts]
        _, _, ids = read([encoded[c.id].lsd for c in cuts])
        hyps = [normalize(tokenizer.decode(i), norm) for i in ids]
        print(f"{split}: reader WER {100 * jiwer.wer(refs, hyps):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
