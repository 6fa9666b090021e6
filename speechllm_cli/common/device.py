"""Where the stages compute: the recipe's ``device`` (auto, cuda or cpu), decided in this one place.

``auto`` takes the GPU when torch sees one, ``cuda`` insists on one, ``cpu`` leaves any GPU alone. Every model
placement asks here rather than calling ``torch.cuda.is_available()`` itself, because a silent CPU fallback
is how a GPU goes unused for hours: the pinned torch is a CUDA 13 build, which an older driver cannot run,
and on such a node ``auto`` would quietly train on the CPU. So ``cuda`` that torch cannot use is an error,
and when a command's first training or encoding loop starts, the main process says where (:func:`announce`),
once: a stage that fails on its inputs before its work starts still fails in one line.

Module level stays free of torch, as in :mod:`speechllm_cli.common.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from speechllm_cli.common import distributed
from speechllm_cli.common.errors import SpeechLLMError

if TYPE_CHECKING:
    import torch

Choice = Literal["auto", "cuda", "cpu"]

_choice: Choice = "auto"
_note: Callable[[str], None] | None = None
"""Who hears the device line, until the first loop says it."""


def choose(choice: Choice, note: Callable[[str], None] | None = None) -> None:
    """Set the device every later placement in this process uses, and who hears :func:`announce`; ``cuda``
    without a usable GPU fails here."""
    global _choice, _note
    _choice, _note = choice, note
    use_cuda()


def use_cuda() -> bool:
    import torch

    if _choice == "cpu":
        return False
    available = torch.cuda.is_available()
    if _choice == "cuda" and not available:
        raise SpeechLLMError(
            f"device: cuda, but torch {torch.__version__} sees no usable GPU (built for CUDA "
            f"{torch.version.cuda or 'none'}; a driver older than that build cannot run it): set device to auto "
            "or cpu, or install the torch build for your CUDA (README)")
    return available


def local_index() -> int:
    """The GPU of this process: one per process, as torchrun and accelerate launch number them."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def torch_device() -> torch.device:
    import torch

    return torch.device(f"cuda:{local_index()}") if use_cuda() else torch.device("cpu")


def dtype() -> torch.dtype:
    """bf16 on a GPU halves the memory of a frozen LLM at no accuracy cost; a CPU runs fp32 fastest."""
    import torch

    return torch.bfloat16 if use_cuda() else torch.float32


def announce() -> None:
    """Called as a training, encoding or decoding loop starts: the first call after :func:`choose` tells its
    listener :func:`describe` (main process only), later ones do nothing."""
    global _note
    if _note is not None:
        note, _note = _note, None
        if distributed.is_main():
            note(describe())


def describe() -> str:
    """One line for the log: the device, the dtype the LLMs are loaded in, and how many processes share it."""
    import torch

    processes = distributed.world_size()
    count = f"{processes} process" + ("es" if processes > 1 else "")
    if use_cuda():
        index = local_index()
        return (f"device cuda:{index} ({torch.cuda.get_device_name(index)}), bf16, {count} "
                f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
    return f"device cpu ({torch.get_num_threads()} threads), fp32, {count} (torch {torch.__version__})"
