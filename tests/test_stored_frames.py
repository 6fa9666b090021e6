"""A split's encoder outputs stay on disk until their batch is collated (issue 24, finding 6): a training set of
real speech holds its batches in memory, not its split."""

from __future__ import annotations

from pathlib import Path

import torch

from speechllm_cli.common.io import write_json
from speechllm_cli.core.feeds import Example, StoredFrames, collate_fn
from speechllm_cli.stages import front_end


def _cache(folder: Path, encoded: dict[str, front_end.Encoded]) -> front_end.CachedPosteriors:
    folder.mkdir()
    front_end._write_part(folder / "part-00000.safetensors", encoded)
    write_json(folder / front_end.INDEX, {"parts": ["part-00000.safetensors"], "utterances": len(encoded)})
    opened = front_end._open(folder)
    assert opened is not None
    return opened


def test_stored_frames_read_nothing_until_their_batch_is_collated(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    encoded = {f"u{i}": front_end.Encoded(torch.randn(3 + i, 8, generator=generator).half(),
                                          torch.randn(3 + i, 4, generator=generator).half(), [1], 1.0, 0.1)
               for i in range(5)}
    cache = _cache(tmp_path / "cache", encoded)
    reads: list[str] = []

    def counted(uid: str) -> StoredFrames:
        stored = cache.stored(uid)
        return StoredFrames(stored.shape, lambda: (reads.append(uid), stored.read())[1])

    examples = [Example("speech", counted(uid), [1, 2]) for uid in encoded]
    assert [len(e) for e in examples] == [3, 4, 5, 6, 7] and reads == []
    assert cache.stored("u2", "hidden").shape == (5, 4)

    batch = collate_fn(lambda ids, generator, progress: (torch.empty(0), torch.empty(0)))(
        examples[1:3], torch.Generator(), 0.0)
    assert reads == ["u1", "u2"]
    for position, uid in enumerate(["u1", "u2"]):
        assert batch.posteriors[position].dtype == torch.float32
        assert torch.equal(batch.posteriors[position], encoded[uid].lsd.float())
