"""The systems ``decode`` runs, behind one interface, for a prepared split and for a user's files alike.

- ``ctc``: the encoder's own greedy CTC output, the floor a speech LLM has to beat;
- an ``align`` system: a speech LLM reading the front end's LSD posteriors;
- a peer (``decode.peers``): a complete off-the-shelf ASR model (Whisper) reading the audio itself, what a
  user would otherwise reach for.
Curriculum evaluation decodes its cells' speech LLMs through :class:`SpeechLLMSystem` too, so a number in
any table comes from the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from speechllm_cli.common import distributed
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import GenerationConfig, WhisperASRConfig
from speechllm_cli.data.audio_source import AudioSource, Subset
from speechllm_cli.data.sources import Track
from speechllm_cli.stages.front_end import Encoded, SpeechFrontEnd
from speechllm_cli.stages.runner import Context
from speechllm_cli.stages.speech_llm_io import interface_of, load_trained, speech_llm_names

if TYPE_CHECKING:
    from speechllm_cli.core.speech_llm import SpeechLLM
    from speechllm_cli.stages.decode import DecodeConfig

CTC = "ctc"


@dataclass
class Utterances:
    """What a system may read: the audio, and the front end's output for it (computed once, when first asked)."""

    audio: AudioSource
    _encode: Callable[[], Sequence[Encoded]]
    _encoded: Sequence[Encoded] | None = field(default=None, init=False)

    def encoded(self) -> Sequence[Encoded]:
        if self._encoded is None:
            self._encoded = self._encode()
        return self._encoded

    def subset(self, indices: Sequence[int]) -> Utterances:
        return Utterances(Subset(self.audio, indices), lambda: [self.encoded()[i] for i in indices])


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

    return Utterances(audio, encode)


def file_utterances(front: SpeechFrontEnd, audio: AudioSource) -> Utterances:
    return Utterances(audio, lambda: front.audio(audio, "encoding files"))


class System(Protocol):
    reads_front_end: bool
    """Whether the system reads the encoder's output (whose time then counts as decoding time)."""

    def transcribe(self, utterances: Utterances, description: str) -> list[str]: ...


class CTCSystem:
    reads_front_end = True

    def __init__(self, front: SpeechFrontEnd) -> None:
        self.front = front

    def transcribe(self, utterances: Utterances, description: str) -> list[str]:
        return [self.front.encoder.ids_to_text(encoded.greedy) for encoded in utterances.encoded()]


class SpeechLLMSystem:
    reads_front_end = True

    def __init__(self, model: SpeechLLM, tokenizer: Any, vocab_size: int, generation: GenerationConfig,
                 batch_size: int, track: Track, feature: str = "lsd") -> None:
        self.model, self.tokenizer, self.vocab_size = model, tokenizer, vocab_size
        self.generation, self.batch_size, self.track, self.feature = generation, batch_size, track, feature

    def transcribe(self, utterances: Utterances, description: str) -> list[str]:
        from speechllm_cli.core.feeds import Example

        return self.answer([Example("speech", getattr(e, self.feature), []) for e in utterances.encoded()],
                           description)

    def answer(self, examples: list[Any], description: str) -> list[str]:
        """Generated text for any input kind (curriculum evaluation also asks with transcripts)."""
        from speechllm_cli.core.feeds import generate_texts

        return generate_texts(self.model, self.tokenizer, examples, self.vocab_size, self.batch_size,
                              self.generation, self.track, description)


class PeerSystem:
    reads_front_end = False

    def __init__(self, config: WhisperASRConfig, batch_size: int, track: Track) -> None:
        from speechllm_cli.core.whisper_asr import WhisperASR

        self.asr, self.batch_size, self.track = WhisperASR(config), batch_size, track

    def transcribe(self, utterances: Utterances, description: str) -> list[str]:
        return self.asr.transcribe(utterances.audio, self.batch_size, self.track, description)


def transcribe_shared(system: System, utterances: Utterances, description: str) -> list[str]:
    """Every utterance's hypothesis, the work shared by every process (``--num-processes``): each decodes every
    N-th utterance in length order, so shards cost alike, and all get the merged hypotheses in input order.

    Decoding an utterance does not depend on its batch (left padding is masked, and greedy and beam search
    are per row), so the merged result is one process's result."""
    distributed.joint_work_starts()
    order = sorted(range(len(utterances.audio)), key=utterances.audio.seconds.__getitem__)
    mine = order[distributed.rank()::distributed.world_size()]
    merged = [""] * len(order)
    for indices, texts in distributed.gather((mine, system.transcribe(utterances.subset(mine), description))):
        for index, text in zip(indices, texts, strict=True):
            merged[index] = text
    distributed.joint_work_ends()
    return merged


def speech_llm_system(context: Context, front: SpeechFrontEnd, name: str, generation: GenerationConfig,
                      batch_size: int) -> SpeechLLMSystem:
    """An align system as trained; only a finished ``align`` unit counts."""
    model, tokenizer = load_trained(context, front.encoder, name)
    return SpeechLLMSystem(model, tokenizer, front.encoder.vocab_size, generation, batch_size, context.track,
                           interface_of(context, name).feature)


SystemFactory = Callable[[Context, "DecodeConfig", SpeechFrontEnd, str], System]

_FACTORIES: dict[str, SystemFactory] = {
    "ctc": lambda context, config, front, name: CTCSystem(front),
    "speech-llm": lambda context, config, front, name: speech_llm_system(context, front, name, config.generation,
                                                                         config.batch_size),
    "peer": lambda context, config, front, name: PeerSystem(config.peers[name], config.batch_size, context.track),
}


def system_kind(context: Context, config: DecodeConfig, name: str) -> str:
    """Which kind of system ``name`` is; an unknown name is refused before any file or model is read."""
    kinds = {CTC: "ctc"} | dict.fromkeys(speech_llm_names(context), "speech-llm")
    kinds |= dict.fromkeys(config.peers, "peer")
    if name not in kinds:
        raise SpeechLLMError(f"--system {name}: not a system of recipe {context.config.name!r} "
                             f"(known: {', '.join(kinds)})")
    return kinds[name]


def build_system(context: Context, config: DecodeConfig, front: SpeechFrontEnd, name: str) -> System:
    return _FACTORIES[system_kind(context, config, name)](context, config, front, name)
