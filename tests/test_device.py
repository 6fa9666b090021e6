"""The recipe's ``device`` decides where models compute, and a stage names it (issue 24, finding 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechllm_cli.common import device
from speechllm_cli.core.llm import device_and_dtype
from speechllm_cli.core.training import mixed_precision


@pytest.fixture
def gpu_seen(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """torch reports a GPU (nothing is placed on it here); the choice is put back afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    yield
    device.choose("auto")


def test_cpu_leaves_a_gpu_torch_sees_alone(gpu_seen) -> None:  # noqa: ANN001
    device.choose("cpu")
    assert not device.use_cuda()
    assert device_and_dtype() == (torch.device("cpu"), torch.float32)
    assert mixed_precision("auto") == "no"


def test_auto_takes_the_gpu_of_this_process_in_bf16(gpu_seen) -> None:  # noqa: ANN001
    device.choose("auto")
    assert device_and_dtype() == (torch.device("cuda:1"), torch.bfloat16)
    assert mixed_precision("auto") == "bf16"


def test_cuda_that_torch_cannot_use_is_one_line_naming_the_build(cli, tmp_path: Path) -> None:
    result = cli("prepare-text", "--recipe", "tiny", "--exp-dir", "e", "--set", "device=cuda")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: device: cuda, but torch ") and torch.__version__ in lines[0]
    assert not (tmp_path / "e").exists()


def test_an_unknown_device_is_refused_naming_the_key(cli) -> None:
    result = cli("prepare-text", "--recipe", "tiny", "--exp-dir", "e", "--set", "device=gpu")
    assert result.returncode == 1 and "device: Input should be 'auto', 'cuda' or 'cpu'" in result.stderr
