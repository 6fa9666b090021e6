"""The systems ``decode`` runs, behind one interface, for a prepared split and for a user's files alike.

- ``ctc``: the encoder's own greedy CTC output, the floor a speech LLM has to beat;
- a search (``decode.searches``): the encoder's output searched with a word n-gram LM of the recipe's text,
  what the same text buys a classic ASR system;
- an ``align`` system: a speech LLM reading the front end's LSD posteriors;
- a peer (``decode.peers``): a complete off-the-shelf ASR model (Whisper) reading the audio itself, what a
  user would otherwise reach for;
- a cascade (``decode.cascades``): another system's transcript (or the split's own, the text ceiling) read
  by the original LLM, the baseline of every understanding result.
Speech LLMs and cascades follow instructions: they can be asked a question or a classification instead of a
transcript.
Curriculum evaluation decodes its cells' speech LLMs through :class:`SpeechLLMSystem` too, so a number in
any table comes from the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from speechllm_cli.common import distributed
from speechllm_cli.common.batching import Batching
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import GenerationConfig, LLMConfig, LMSearchConfig, WhisperASRConfig
from speechllm_cli.data.audio_source import AudioSource, Subset
from speechllm_cli.data.sources import Track
from speechllm_cli.stages.front_end import Encoded, SpeechFrontEnd
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.speech_llm_io import interface_of, load_trained, prompt_for, speech_llm_names

if TYPE_CHECKING:
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM
    from speechllm_cli.stages.decode import DecodeConfig

CTC = "ctc"
INSTRUCTED = frozenset({"speech-llm", "cascade"})
"""The kinds of system that follow instructions (the others only transcribe)."""
REFERENCE = "reference"
"""The transcripts a cascade reads when it is the text ceiling: the split's own."""


@dataclass
class Utterances:
    """What a system may read: the audio, the front end's output for it (computed once, when first asked), and
    for a prepared split its transcripts (what the text ceiling reads)."""

    audio: AudioSource
    _encode: Callable[[], Sequence[Encoded]]
    transcripts: Sequence[str] | None = None
    _encoded: Sequence[Encoded] | None = field(default=None, init=False)

    def encoded(self) -> Sequence[Encoded]:
        if self._encoded is None:
            self._encoded = self._encode()
        return self._encoded

    def subset(self, indices: Sequence[int]) -> Utterances:
        transcripts = None if self.transcripts is None else [self.transcripts[i] for i in indices]
        return Utterances(Subset(self.audio, indices), lambda: [self.encoded()[i] for i in indices], transcripts)


def split_utterances(front: SpeechFrontEnd, split: str, ids: Sequence[str] | None = None) -> Utterances:
    """A prepared split's utterances (those of ``ids`` only, in that order, when given)."""
    from speechllm_cli.data.cut_audio import CutAudio
    from speechllm_cli.stages.inputs import load_cuts

    cuts = load_cuts(front.context, split)
    if ids is not None:
        cuts = cuts.subset(cut_ids=list(ids))
    audio = CutAudio(cuts)

    def encode() -> list[Encoded]:
        cached = front.split(split)
        return [cached[uid] for uid in audio.ids]

    return Utterances(audio, encode, [cut.supervisions[0].text or "" for cut in cuts])


def file_utterances(front: SpeechFrontEnd, audio: AudioSource) -> Utterances:
    return Utterances(audio, lambda: front.audio(audio, "encoding files"))


class System(Protocol):
    reads_front_end: bool
    """Whether the system reads the encoder's output (whose time then counts as decoding time)."""

    def transcribe(self, utterances: Utterances, description: str, instruction: str | None = None) -> list[str]:
        """One output per utterance: its transcript, or with ``instruction`` (systems of an ``INSTRUCTED``
        kind only) the answer to it."""


class CTCSystem:
    reads_front_end = True

    def __init__(self, front: SpeechFrontEnd) -> None:
        self.front = front

    def transcribe(self, utterances: Utterances, description: str, instruction: str | None = None) -> list[str]:
        return [self.front.encoder.ids_to_text(encoded.greedy) for encoded in utterances.encoded()]


class LMSearchSystem:
    reads_front_end = True

    def __init__(self, front: SpeechFrontEnd, config: LMSearchConfig) -> None:
        from speechllm_cli.core.encoders import BLANK_ID
        from speechllm_cli.core.lm_search import LMSearch, SearchSettings
        from speechllm_cli.core.ngram import NgramLM
        from speechllm_cli.stages.inputs import load_text_set

        encoder = front.encoder
        if getattr(encoder, "phoneme_units", False):
            raise SpeechLLMError("decode.searches: a word LM cannot score phoneme units (the encoder's units are "
                                 "phonemes, not spellings)")
        sentences = [row["text"].split() for name in config.text_sets for row in load_text_set(front.context, name)]
        lm = NgramLM.estimate(sentences, config.order, config.discount)
        settings = SearchSettings(config.lm_weight, config.word_bonus, config.beam, config.unit_beam, config.min_prob)
        self.front, self.search = front, LMSearch(lm, encoder.units(), BLANK_ID, settings)

    def transcribe(self, utterances: Utterances, description: str, instruction: str | None = None) -> list[str]:
        encoded = utterances.encoded()
        return [self.front.encoder.ids_to_text(self.search.decode(e.lsd))
                for e in self.front.context.track(encoded, len(encoded), description)]


class SpeechLLMSystem:
    reads_front_end = True

    def __init__(self, model: SpeechLLM, tokenizer: Any, vocab_size: int, generation: GenerationConfig,
                 batching: Batching, track: Track, prompt: Callable[[str], Prompt], feature: str = "lsd") -> None:
        """``prompt`` builds the chat prompt of an instruction (the model was trained with one of them)."""
        self.model, self.tokenizer, self.vocab_size = model, tokenizer, vocab_size
        self.generation, self.batching, self.track, self.feature = generation, batching, track, feature
        self.prompt = prompt

    def transcribe(self, utterances: Utterances, description: str, instruction: str | None = None) -> list[str]:
        from speechllm_cli.core.feeds import Example

        return self.answer([Example("speech", getattr(e, self.feature), []) for e in utterances.encoded()],
                           description, instruction)

    def answer(self, examples: list[Any], description: str, instruction: str | None = None) -> list[str]:
        """Generated text for any input kind (curriculum evaluation also asks with transcripts), asked with
        ``instruction`` in place of the trained one when given."""
        from speechllm_cli.core.feeds import generate_texts

        with self.model.prompted(self.prompt(instruction) if instruction is not None else None):
            return generate_texts(self.model, self.tokenizer, examples, self.vocab_size, self.batching,
                                  self.generation, self.track, description)

    def read(self, texts: Sequence[str], description: str, instruction: str | None = None) -> list[str]:
        """Answers to text put where the speech goes (with the adapters the system has)."""
        from speechllm_cli.core.feeds import Example
        from speechllm_cli.core.llm import encode_text

        return self.answer([Example("text", encode_text(self.tokenizer, t), []) for t in texts], description,
                           instruction)


class CascadeSystem:
    """A transcript read by the original LLM: the baseline every understanding result is compared with.

    The transcript comes from another system (``ctc``, a search, the Whisper peer) or, for the text ceiling,
    is the split's own reference; the LLM is asked the same instruction a speech LLM would be."""


    def __init__(self, transcriber: System | None, reader: SpeechLLMSystem, instruction: str) -> None:
        self.transcriber, self.reader, self.instruction = transcriber, reader, instruction
        self.reads_front_end = transcriber is not None and transcriber.reads_front_end

    def transcribe(self, utterances: Utterances, description: str, instruction: str | None = None) -> list[str]:
        return self.reader.read(self.transcripts(utterances, description), description,
                                instruction or self.instruction)

    def transcripts(self, utterances: Utterances, description: str) -> list[str]:
        if self.transcriber is not None:
            return self.transcriber.transcribe(utterances, f"{description}: transcribing")
        if utterances.transcripts is None:
            raise SpeechLLMError("the text ceiling reads a prepared split's transcripts; audio files have none")
        return list(utterances.transcripts)


class PeerSystem:
    reads_front_end = False

    def __init__(self, config: WhisperASRConfig, batch_size: int, track: Track) -> None:
        from speechllm_cli.core.whisper_asr import WhisperASR

        self.asr, self.batch_size, self.track = WhisperASR(config), batch_size, track

    def transcribe(self, utterances: Utterances, description: str, instruction: str | None = None) -> list[str]:
        return self.asr.transcribe(utterances.audio, self.batch_size, self.track, description)


def transcribe_shared(system: System, utterances: Utterances, description: str,
                      instruction: str | None = None) -> list[str]:
    """Every utterance's hypothesis, the work shared by every process (``--num-processes``): each decodes every
    N-th utterance in length order, so shards cost alike, and all get the merged hypotheses in input order.

    Decoding an utterance does not depend on its batch (left padding is masked, and greedy and beam search
    are per row), so the merged result is one process's result."""
    distributed.joint_work_starts()
    order = sorted(range(len(utterances.audio)), key=utterances.audio.seconds.__getitem__)
    mine = order[distributed.rank()::distributed.world_size()]
    merged = [""] * len(order)
    outputs = system.transcribe(utterances.subset(mine), description, instruction)
    for indices, texts in distributed.gather((mine, outputs)):
        for index, text in zip(indices, texts, strict=True):
            merged[index] = text
    distributed.joint_work_ends()
    return merged


def speech_llm_system(context: Context, front: SpeechFrontEnd, name: str, generation: GenerationConfig,
                      batching: Batching) -> SpeechLLMSystem:
    """An align system as trained; only a finished ``align`` unit counts."""
    model, tokenizer = load_trained(context, front.encoder, name)
    return SpeechLLMSystem(model, tokenizer, front.encoder.vocab_size, generation, batching, context.track,
                           lambda instruction: prompt_for(tokenizer, instruction, context.config.model),
                           interface_of(context, name).feature)


def reader_llm(context: Context, llm: str | None = None) -> LLMConfig:
    """The recipe's LLM settings with ``llm`` (a model reference) in place of its model when given."""
    return context.config.model.llm if llm is None else context.config.model.llm.model_copy(update={"model": llm})


def original_llm(context: Context, front: SpeechFrontEnd, generation: GenerationConfig, batching: Batching,
                 llm: str | None = None) -> SpeechLLMSystem:
    """The recipe's LLM (or ``llm``) as it ships (no adapter, no training), prompted like the speech LLMs: what
    reads a cascade's transcripts."""
    from speechllm_cli.stages.speech_llm_io import build_speech_llm

    model_config = context.config.model
    untrained = model_config.model_copy(update={"llm": reader_llm(context, llm).model_copy(update={"lora": None})})
    instruction = context.section("align").instruction
    model, tokenizer = build_speech_llm(untrained, instruction, front.encoder)
    return SpeechLLMSystem(model.eval(), tokenizer, front.encoder.vocab_size, generation, batching, context.track,
                           lambda text: prompt_for(tokenizer, text, untrained))


def cascade_system(context: Context, config: DecodeConfig, front: SpeechFrontEnd, name: str) -> CascadeSystem:
    cascade = config.cascades[name]
    transcriber = None if cascade.transcripts == REFERENCE else build_system(context, config, front,
                                                                            cascade.transcripts)
    reader = original_llm(context, front, config.generation, config.batching, cascade.llm)
    return CascadeSystem(transcriber, reader, context.section("align").instruction)


SystemFactory = Callable[[Context, "DecodeConfig", SpeechFrontEnd, str], System]

_FACTORIES: dict[str, SystemFactory] = {
    "ctc": lambda context, config, front, name: CTCSystem(front),
    "speech-llm": lambda context, config, front, name: speech_llm_system(context, front, name, config.generation,
                                                                         config.batching),
    "search": lambda context, config, front, name: LMSearchSystem(front, config.searches[name]),
    "peer": lambda context, config, front, name: PeerSystem(config.peers[name], config.batch_size, context.track),
    "cascade": cascade_system,
}


def system_kind(context: Context, config: DecodeConfig, name: str) -> str:
    """Which kind of system ``name`` is; an unknown name is refused before any file or model is read."""
    kinds = {CTC: "ctc"} | dict.fromkeys(speech_llm_names(context), "speech-llm")
    kinds |= dict.fromkeys(config.searches, "search") | dict.fromkeys(config.peers, "peer")
    kinds |= dict.fromkeys(config.cascades, "cascade")
    if name not in kinds:
        raise SpeechLLMError(f"--system {name}: not a system of recipe {context.config.name!r} "
                             f"(known: {', '.join(kinds)})")
    return kinds[name]


def build_system(context: Context, config: DecodeConfig, front: SpeechFrontEnd, name: str) -> System:
    return _FACTORIES[system_kind(context, config, name)](context, config, front, name)
