"""Training and evaluating the cells of a sweep, and the record each cell leaves for ``score``.

After its last phase a cell's model is decoded on the track's test set twice, with the speech (through the
speech front end and the speech-LLM system ``decode`` uses) and with the transcript as input: the two sides
of the text-speech gap; and once more for each of ``cascades``, reading that transcriber's transcript.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common.batching import Batching
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json, write_jsonl
from speechllm_cli.stages.curriculum.config import Cell, CurriculumConfig
from speechllm_cli.stages.curriculum.plan import PhasePlan, plan_phases
from speechllm_cli.stages.curriculum.pools import Pools, split_of
from speechllm_cli.stages.curriculum.records import cascade_file, cell_record_path
from speechllm_cli.stages.front_end import SpeechFrontEnd
from speechllm_cli.stages.inputs import load_text_set, text_set_path
from speechllm_cli.stages.runner import Context, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import require_posteriors

if TYPE_CHECKING:
    from speechllm_cli.core.feeds import Simulate
    from speechllm_cli.core.speech_llm import SpeechLLM
    from speechllm_cli.stages.systems import SpeechLLMSystem, Utterances

TRANSCRIBERS = frozenset({"ctc", "search", "peer"})
"""Kinds of ``decode`` system whose output is a transcript a cell's model can read."""


def _set_trainable(model: SpeechLLM, parts: list[str]) -> None:
    for name, parameter in model.named_parameters():
        if name.startswith("projector."):
            parameter.requires_grad_("projector" in parts)
        elif "lora_" in name:
            parameter.requires_grad_("lora" in parts)


class Runner:
    """Trains and evaluates cells; loads the encoder, LLM tokenizer and per-track pools once."""

    def __init__(self, context: Context, config: CurriculumConfig) -> None:
        align = context.config.align
        if config.init is not None and (align is None or config.init not in align.systems):
            raise SpeechLLMError(f"curriculum_finetune.init: {config.init!r} is not an align system of this recipe")
        if config.init is not None:
            require_posteriors(context, config.init, "curriculum_finetune.init", "curriculum-finetune")
        self._check_cascades(context, config.cascades)
        self.context, self.config = context, config
        self.front = SpeechFrontEnd(context)
        self._pools: dict[str, Pools] = {}

    @staticmethod
    def _check_cascades(context: Context, names: list[str]) -> None:
        """Refused before any training: a cascade must name a transcriber of ``decode``."""
        from speechllm_cli.stages.systems import system_kind

        for name in names:
            kind = system_kind(context, context.section("decode"), name)
            if kind not in TRANSCRIBERS:
                raise SpeechLLMError(f"curriculum_finetune.cascades: {name!r} is a {kind} system, not a transcriber "
                                     f"of decode ({', '.join(sorted(TRANSCRIBERS))})")

    def _model(self, start: Path | None, lora: bool) -> tuple[SpeechLLM, Any]:
        """The recipe's model with the weights saved in ``start``: its LoRA too where ``lora``, else a fresh one."""
        from speechllm_cli.stages.speech_llm_io import build_speech_llm, load_weights

        model, tokenizer = build_speech_llm(self.context.config.model, self.config.instruction, self.front.encoder)
        if start is not None:
            load_weights(model, start, lora)
        return model, tokenizer

    def pools(self, track: str) -> Pools:
        if track not in self._pools:
            from speechllm_cli.core.llm import load_tokenizer
            from speechllm_cli.stages.speech_llm_io import llm_cache_dir

            tokenizer = load_tokenizer(self.context.config.model.llm, llm_cache_dir())
            self._pools[track] = Pools(self.context, self.config, track, self.front, tokenizer)
        return self._pools[track]

    def train_phase(self, plan: PhasePlan) -> dict[str, Any]:
        from speechllm_cli.core import feeds
        from speechllm_cli.core.training import TrainJob, seed_everything, train
        from speechllm_cli.stages.speech_llm_io import save_trained

        seed_everything(self.config.train.seed)
        model, _ = self._model(plan.previous, plan.previous_lora)
        _set_trainable(model, plan.phase.train)
        examples = plan.examples
        steps = max(1, math.ceil(plan.phase.epochs * len(examples) / self.config.train.batch_size))
        train_config = self.config.train.model_copy(update={
            "steps": steps, "lr": plan.phase.lr, "warmup_steps": max(1, round(self.config.warmup_ratio * steps))})
        job = TrainJob(model, examples, [len(e) for e in examples], feeds.collate_fn(self._simulation()), feeds.loss,
                       plan.folder)
        report = train(job, train_config, self.context.track)
        save_trained(model, plan.folder, self.context.config.model)
        return {"examples": plan.counts, "steps": steps, "resumed_from": report.resumed_from,
                "first_loss": report.first_loss, "last_loss": report.last_loss, "seconds": round(report.seconds, 1)}

    def _simulation(self) -> Simulate:
        """The cps inputs are simulated the way the init system was aligned (TASU's CPS, or the encoder's
        calibrated simulation), so that a phase continues on the input the projector already reads."""
        from speechllm_cli.core import feeds
        from speechllm_cli.stages.align import simulation

        align = self.context.config.align
        vocab_size = self.front.encoder.vocab_size
        if self.config.init is None or align is None:
            return feeds.tasu_cps(vocab_size, self.context.config.model.cps)
        return simulation(self.context, align, align.systems[self.config.init], vocab_size)

    def _system(self, plan: PhasePlan) -> SpeechLLMSystem:
        from speechllm_cli.stages.speech_llm_io import prompt_for
        from speechllm_cli.stages.systems import SpeechLLMSystem

        model, tokenizer = self._model(plan.folder, self.context.config.model.llm.lora is not None)
        return SpeechLLMSystem(model.eval(), tokenizer, self.front.encoder.vocab_size, self.config.generation,
                               Batching(self.config.decode_batch_size), self.context.track,
                               lambda instruction: prompt_for(tokenizer, instruction, self.context.config.model))

    def evaluate(self, cell: Cell, plan: PhasePlan, out: Path) -> dict[str, Any]:
        """Hypotheses of the cell's model on the test set with speech and with transcripts as input."""
        from speechllm_cli.stages.systems import split_utterances

        test = self.config.tracks[cell.track].test
        split = split_of(self.context, test, f"curriculum_finetune.tracks.{cell.track}.test")
        rows = load_text_set(self.context, test)
        posteriors = self.front.split(split)
        system = self._system(plan)
        spoken = [r for r in rows if r["id"] in posteriors and posteriors[r["id"]].lsd.shape[0]]
        utterances = split_utterances(self.front, split, [r["id"] for r in spoken])
        hyps = {"speech": system.transcribe(utterances, f"{cell.name}: {test} (speech input)"),
                "text": system.read([r["text"] for r in rows], f"{cell.name}: {test} (text input)")}
        stats: dict[str, Any] = {}
        for kind, used in (("speech", spoken), ("text", rows)):
            write_jsonl(out / f"{kind}.jsonl", ({"id": r["id"], "text": r["text"], "ref": r["target"], "hyp": h}
                                                for r, h in zip(used, hyps[kind], strict=True)))
            stats[kind] = {"utterances": len(used), "without_speech": len(rows) - len(used)}
        for name in self.config.cascades:
            transcripts = self._transcripts(name, utterances, [r.get("lang") or "en" for r in spoken],
                                            f"{cell.name}: {test} ({name} transcript)")
            answers = system.read(transcripts, f"{cell.name}: {test} (read from the {name} transcript)")
            write_jsonl(out / cascade_file(name), ({"id": r["id"], "text": t, "ref": r["target"], "hyp": h}
                                                   for r, t, h in zip(spoken, transcripts, answers, strict=True)))
        return {**stats, "cascades": self.config.cascades, "test": test, "command": self.context.command}

    def _cascade_settings(self) -> dict[str, Any]:
        """What each cascade's transcript depends on beyond the front end: its search's or peer's settings."""
        decode = self.context.section("decode")
        settings = {**decode.searches, **decode.peers}
        return {name: settings[name].model_dump(mode="json") if name in settings else name
                for name in self.config.cascades}

    def _transcripts(self, name: str, utterances: Utterances, langs: list[str], description: str) -> list[str]:
        """A transcriber's transcripts in the form the cell's text inputs have (``prepare_text``'s normalisation)."""
        from speechllm_cli.data.normalize import normalize
        from speechllm_cli.stages.systems import build_system

        decode = self.context.section("decode")
        texts = build_system(self.context, decode, self.front, name).transcribe(utterances, description)
        normalizer = self.context.section("prepare_text").normalize
        return [normalize(text, normalizer, lang) for text, lang in zip(texts, langs, strict=True)]

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        pools = self.pools(cell.track)
        speech, kept = pools.speech(cell.budget)
        by_kind = {"text": pools.text, "cps": pools.cps, "speech": speech}
        plans = plan_phases(self.context, self.config, cell, by_kind, kept)
        track = self.config.tracks[cell.track]
        units = [Unit(f"{cell.name} phase {i + 1}", p.folder, {"key": p.key}, [],
                      lambda p=p: self.train_phase(p)) for i, p in enumerate(plans)]
        final = plans[-1]
        eval_dir = final.folder / "eval" / track.test
        generation = self.config.generation.model_dump(mode="json")
        cascades = {"cascades": self._cascade_settings()} if self.config.cascades else {}
        units.append(Unit(f"{cell.name} eval", eval_dir,
                          {"key": final.key, "test": track.test, "generation": generation, **cascades},
                          [text_set_path(self.context, track.test)], lambda: self.evaluate(cell, final, eval_dir)))
        outcomes = run_units(self.context, units)
        uses_speech = any("speech" in p.phase.inputs for p in plans)
        record = {"cell": cell.name, "track": cell.track, "scheme": cell.scheme, "budget": cell.budget,
                  "speech_utterances": len(speech) if uses_speech else 0, "budget_utterances": len(kept),
                  "budget_pool": len(pools.speech_pool), "target_speech": len(pools.target_speech),
                  "budget_ids": kept, "left_out": pools.left_out, "without_speech": pools.without_speech,
                  "eval_dir": str(eval_dir.relative_to(self.context.exp_dir)),
                  "phases": [{"key": p.key[:16], "inputs": p.phase.inputs, "train": p.phase.train,
                              "epochs": p.phase.epochs, "lr": p.phase.lr, **o.stats, "status": status(o)}
                             for p, o in zip(plans, outcomes, strict=False)],
                  "evaluation": {**outcomes[-1].stats, "status": status(outcomes[-1])}}
        write_json(cell_record_path(self.context, cell), record)
        return record
