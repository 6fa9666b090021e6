"""Corpus-level WER/CER and a per-utterance error listing for ASR hypotheses.

Inputs are already normalised: the caller applies the same normaliser to references and hypotheses
(``speechllm_cli.data.normalize``), so that scoring never silently changes the text it is given.

Definitions (chosen so numbers stay comparable across systems, corpora and languages):

- Words are whitespace-separated tokens.
- Characters are counted with all whitespace removed. Spacing is a segmentation convention, not
  something the speaker said: keeping spaces would count a split or merged word as a character error,
  inflate the denominator of space-delimited languages relative to Chinese or Japanese, and make CER
  depend on how the normaliser collapsed spaces.
- Corpus rates are total errors (S + D + I) over total reference units, not the mean of per-utterance
  rates, so long utterances weigh in proportion to their length and a short one cannot dominate.
- With zero reference units the rate is the error count divided by one: 0.0 when the hypothesis is
  empty too, otherwise the number of inserted units (2.0 for two hallucinated words). It stays finite,
  so the summary is valid JSON, and it grows with every inserted word instead of hiding it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import jiwer

from speechllm_cli.common.errors import SpeechLLMError

TOP_ERRORS = 20
"""How many of the most frequent substitutions, deletions and insertions the listing shows."""

_MISSING = "*"

Pair = tuple[str | None, str | None]
"""One aligned position: (ref, hyp); ``None`` on the side that has no word (insertion / deletion)."""


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts for words or characters; summable across utterances."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def ref_units(self) -> int:
        """Reference length, derived from the alignment so it can never disagree with the counts."""
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors per reference unit; with no reference units, errors per one (see module docstring)."""
        return self.errors / max(self.ref_units, 1)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.hits + other.hits)


@dataclass(frozen=True)
class AsrScore:
    """Corpus-level ASR score; ``wer`` and ``cer`` are derived from the counts, never passed in."""

    num_utts: int
    words: ErrorCounts
    chars: ErrorCounts
    wer: float = field(init=False)
    cer: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wer", self.words.rate)
        object.__setattr__(self, "cer", self.chars.rate)

    def as_dict(self) -> dict[str, float | int]:
        """Flat JSON-ready summary; insertions stand on their own so hallucination is visible."""
        return {
            "wer": self.wer,
            "cer": self.cer,
            "num_utts": self.num_utts,
            "substitutions": self.words.substitutions,
            "deletions": self.words.deletions,
            "insertions": self.words.insertions,
            "hits": self.words.hits,
            "ref_words": self.words.ref_units,
            "char_substitutions": self.chars.substitutions,
            "char_deletions": self.chars.deletions,
            "char_insertions": self.chars.insertions,
            "char_hits": self.chars.hits,
            "ref_chars": self.chars.ref_units,
        }


@dataclass(frozen=True)
class _Utterance:
    utt_id: str
    words: ErrorCounts
    chars: ErrorCounts
    alignment: list[Pair]


def score_asr(rows: Sequence[tuple[str, str, str]]) -> tuple[AsrScore, str]:
    """Score ``(utt_id, ref, hyp)`` triples of normalised text; return the score and the error listing.

    Bad input is reported, not scored: no rows at all would read as a perfect 0% WER, and a duplicate
    utterance id (e.g. a hypothesis file appended to twice) would count that utterance twice.
    """
    if not rows:
        raise SpeechLLMError("nothing to score: no (utt_id, ref, hyp) rows were given")
    _check_unique_ids(rows)
    utterances = _score_utterances(rows)
    score = AsrScore(num_utts=len(utterances),
                     words=sum((u.words for u in utterances), ErrorCounts()),
                     chars=sum((u.chars for u in utterances), ErrorCounts()))
    return score, _render_listing(score, utterances)


def _check_unique_ids(rows: Sequence[tuple[str, str, str]]) -> None:
    seen: set[str] = set()
    for utt_id, _, _ in rows:
        if utt_id in seen:
            raise SpeechLLMError(f"utterance id {utt_id!r} is scored twice; each id must appear once")
        seen.add(utt_id)


def _score_utterances(rows: Sequence[tuple[str, str, str]]) -> list[_Utterance]:
    """Align all utterances with one jiwer call for words and one for characters."""
    refs = [ref for _, ref, _ in rows]
    hyps = [hyp for _, _, hyp in rows]
    words = jiwer.process_words([_single_spaced(t) for t in refs], [_single_spaced(t) for t in hyps])
    chars = jiwer.process_characters([_no_spaces(t) for t in refs], [_no_spaces(t) for t in hyps])
    word_pairs = [_pairs(*args) for args in zip(words.references, words.hypotheses, words.alignments)]
    char_counts = [_counts(_pairs(*args)) for args in zip(chars.references, chars.hypotheses, chars.alignments)]
    return [_Utterance(utt_id, _counts(pairs), char_count, pairs)
            for (utt_id, _, _), pairs, char_count in zip(rows, word_pairs, char_counts, strict=True)]


def _single_spaced(text: str) -> str:
    """jiwer splits words on single spaces; any other whitespace would end up inside a word."""
    return " ".join(text.split())


def _no_spaces(text: str) -> str:
    return "".join(text.split())


def _pairs(ref: list[str], hyp: list[str], chunks: list[jiwer.AlignmentChunk]) -> list[Pair]:
    """Expand jiwer's alignment chunks into one (ref, hyp) pair per aligned position."""
    pairs: list[Pair] = []
    for chunk in chunks:
        ref_part = ref[chunk.ref_start_idx:chunk.ref_end_idx]
        hyp_part = hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "delete":
            pairs.extend((r, None) for r in ref_part)
        elif chunk.type == "insert":
            pairs.extend((None, h) for h in hyp_part)
        else:
            pairs.extend(zip(ref_part, hyp_part, strict=True))
    return pairs


def _counts(pairs: list[Pair]) -> ErrorCounts:
    kinds = Counter(_kind(ref, hyp) for ref, hyp in pairs)
    return ErrorCounts(substitutions=kinds["sub"], deletions=kinds["del"], insertions=kinds["ins"],
                       hits=kinds["hit"])


def _kind(ref: str | None, hyp: str | None) -> str:
    if ref is None:
        return "ins"
    if hyp is None:
        return "del"
    return "hit" if ref == hyp else "sub"


def _render_listing(score: AsrScore, utterances: list[_Utterance]) -> str:
    sections = [_header(score), _per_utterance(utterances), _top_errors(utterances)]
    return "\n\n".join(sections) + "\n"


def _header(score: AsrScore) -> str:
    return "\n".join([
        "# speechllm ASR error listing",
        f"utterances: {score.num_utts}",
        _rate_line("WER", score.words, "words"),
        _rate_line("CER", score.chars, "chars"),
        "chars exclude whitespace; rates are total errors / total reference units",
        "marks: (ref->hyp) substitution, (ref->*) deletion, (*->hyp) insertion",
    ])


def _rate_line(name: str, counts: ErrorCounts, unit: str) -> str:
    """Insertions get their own share of the reference so a hallucinating system stands out."""
    inserted = 100 * counts.insertions / max(counts.ref_units, 1)
    return (f"%{name} {100 * counts.rate:.2f} [{counts.errors} errors / {counts.ref_units} ref {unit}]"
            f"  S {counts.substitutions}  D {counts.deletions}  I {counts.insertions}"
            f"  (insertions = {inserted:.2f}% of ref {unit})")


def _per_utterance(utterances: list[_Utterance]) -> str:
    """In the order given, so the listing lines up with the hypothesis file it came from."""
    lines = ["## Per utterance"]
    for utt in utterances:
        w = utt.words
        lines.append(f"{utt.utt_id}  ref {w.ref_units}  S {w.substitutions}  D {w.deletions}"
                     f"  I {w.insertions}  WER {100 * w.rate:.2f}%")
        lines.append("  " + (" ".join(_mark(ref, hyp) for ref, hyp in utt.alignment) or "(no words)"))
    return "\n".join(lines)


def _mark(ref: str | None, hyp: str | None) -> str:
    if ref == hyp:
        return str(ref)
    return f"({_MISSING if ref is None else ref}->{_MISSING if hyp is None else hyp})"


def _top_errors(utterances: list[_Utterance]) -> str:
    by_kind: dict[str, Counter[str]] = {"sub": Counter(), "del": Counter(), "ins": Counter()}
    for utt in utterances:
        for ref, hyp in utt.alignment:
            kind = _kind(ref, hyp)
            if kind != "hit":
                by_kind[kind][_mark(ref, hyp)] += 1
    titles = {"sub": "substitutions", "del": "deletions", "ins": "insertions"}
    return "\n\n".join(_top_section(titles[kind], counter) for kind, counter in by_kind.items())


def _top_section(kind: str, counter: Counter[str]) -> str:
    """Most frequent first; ties broken alphabetically so the listing is reproducible."""
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:TOP_ERRORS]
    shown = f" (top {TOP_ERRORS} of {len(counter)})" if len(counter) > TOP_ERRORS else ""
    lines = [f"## Most frequent {kind}{shown}"]
    lines += [f"{count:6d}  {item}" for item, count in ranked] or ["  (none)"]
    return "\n".join(lines)
