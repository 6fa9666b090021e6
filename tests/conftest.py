"""Shared helpers: run the real ``speechllm`` command, write small audio files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parent.parent
SPEECHLLM = Path(sys.executable).parent / "speechllm"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Free disk where the suite writes, printed first even under ``-q``: a CI run that filled its disk failed as
    dozens of unrelated errors."""
    from speechllm_cli.common.cache import cache_root

    places = {"temporary files": Path(tempfile.gettempdir()), "model cache": cache_root()}
    free = []
    for what, place in places.items():
        existing = next(p for p in (place, *place.parents) if p.exists())
        free.append(f"{what} {place}: {shutil.disk_usage(existing).free / 2**30:.1f} GiB free")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("disk: " + "; ".join(free))
    _build_test_llm()


def _build_test_llm() -> None:
    """The tiny recipe's LLM, built (SmolLM2's GGUF converted for its tokenizer) before any test runs. On a fresh
    machine the first command to need it converts, with a progress bar on stderr, and whichever test came first
    saw that bar in the output it checks line by line."""
    from speechllm_cli.core.configs import LLMConfig
    from speechllm_cli.core.llm import load_tokenizer
    from speechllm_cli.stages.speech_llm_io import llm_cache_dir

    load_tokenizer(LLMConfig(model="tiny-random-smollm2"), llm_cache_dir())


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(SPEECHLLM), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          check=False)


def write_tone(path: Path, seconds: float = 0.5, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sample_rate)
    return path


def librispeech_tree(root: Path, parts: Mapping[str, Mapping[str, Sequence[str]]],
                     write_audio: Callable[[Path, str], None] | None = None, chapter: str = "1211") -> Path:
    """A LibriSpeech-layout copy under ``root/LibriSpeech``: part/speaker/chapter/{utt.flac, speaker-chapter.trans.txt}.

    ``parts`` maps each part to its speakers' transcripts; a speaker's utterance ``i`` is
    ``<speaker>-<chapter>-<i:04d>``. ``write_audio(path, text)`` writes its FLAC; by default utterance ``i``
    is a tone of 0.5 + 0.25 i seconds. Returns ``root``.
    """
    corpus = root / "LibriSpeech"
    for part, speakers in parts.items():
        for speaker, texts in speakers.items():
            folder = corpus / part / speaker / chapter
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for index, text in enumerate(texts):
                utt = f"{speaker}-{chapter}-{index:04d}"
                if write_audio is None:
                    write_tone(folder / f"{utt}.flac", seconds=0.5 + 0.25 * index)
                else:
                    write_audio(folder / f"{utt}.flac", text)
                lines.append(f"{utt} {text}")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def cli(tmp_path: Path):  # noqa: ANN201
    """``cli(*args)`` runs speechllm with the test's temporary folder as working directory."""
    return lambda *args: run_cli(*args, cwd=tmp_path)


def load_cuts(path: Path):  # noqa: ANN201
    """A split manifest ``<exp>/data/<split>/cuts.jsonl.gz``, its audio found as the stages find it."""
    from lhotse import CutSet

    return CutSet.from_file(path).with_recording_path_prefix(str(path.parents[2])).to_eager()


def tiny_wav2vec2(folder: Path, vocab: dict[str, int], layer_norm: bool = True,
                  conv_kernel: tuple[int, ...] = (10, 3), conv_stride: tuple[int, ...] = (5, 2),
                  head_std: float | None = None) -> Path:
    """A random wav2vec2 CTC model with its processor, saved as a hub checkpoint would be.

    ``layer_norm`` picks the variant that masks padding (it batches); ``head_std`` widens the output
    layer so that a random model's argmax varies instead of sitting on one class.
    """
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|", bos_token=None, eos_token=None)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=layer_norm)
    config = Wav2Vec2Config(
        vocab_size=len(vocab), pad_token_id=vocab["<pad>"], hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * len(conv_kernel), conv_kernel=conv_kernel,
        conv_stride=conv_stride, conv_bias=True, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if layer_norm else "group", do_stable_layer_norm=layer_norm)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Wav2Vec2ForCTC(config)
        if head_std is not None:
            torch.nn.init.normal_(model.lm_head.weight, std=head_std)
    model.save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_whisper(folder: Path, layers: int = 2) -> Path:
    """A random Whisper (d_model 32, 4 s of positions) saved as a hub checkpoint would be."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=layers, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=200, max_target_positions=32,
                           decoder_start_token_id=1, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                           begin_suppress_tokens=None, suppress_tokens=None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(config)
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder
