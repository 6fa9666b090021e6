"""Training hyper-parameters, kept free of torch so that configs load (and ``--help`` runs) fast."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from speechllm_cli.common.config import StrictModel

MAX_LR = 1e30


class TrainConfig(StrictModel):
    steps: PositiveInt = 1000
    """Optimizer steps in all, however many processes train (the schedule counts these)."""
    batch_size: PositiveInt = 8
    """Items per micro-batch of one process. A step trains on the global batch, batch_size x processes x
    grad_accum items: more processes see more items per step, not the same items split."""
    grad_accum: PositiveInt = 1
    """Micro-batches each process adds up before a step."""
    lr: PositiveFloat = 1e-3
    """Bounded where float32 arithmetic still holds: at 3e38 the scheduler's update overflowed (a crash), where
    a merely too large rate stops training with a non-finite loss and keeps the last good checkpoint."""
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    warmup_steps: NonNegativeInt = 100
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    """The cosine decays from lr to lr * min_lr_ratio."""
    grad_clip: PositiveFloat = 1.0
    seed: int = 0
    checkpoint_every: PositiveInt = 50
    log_every: PositiveInt = 10
    max_positions: PositiveInt | None = None
    """A budget per micro-batch besides ``batch_size``: items x the longest item's input positions (frames,
    posteriors or tokens: what the stage trains on). Short items then go in large batches and long ones in
    small, keeping memory flat; unset: ``batch_size`` items whatever their length."""
    sort_window: PositiveInt = 50
    """Items are sorted by length inside windows of this many batches, so batches pad little."""
    validate_every: NonNegativeInt = 0
    """Every this many steps (and at the last), the mean loss on held-out items is logged as ``valid_loss``,
    and the trained weights with the lowest one so far are kept in ``checkpoint/best``. 0: no validation."""
    validation_items: NonNegativeInt = 0
    """How many items validation holds out of training (a seeded draw, the same on every rerun)."""

    @field_validator("lr")
    @classmethod
    def _lr_in_float32(cls, lr: float) -> float:
        if lr > MAX_LR:
            raise ValueError(f"at most {MAX_LR:g} (float32 arithmetic overflows beyond)")
        return lr

    @model_validator(mode="after")
    def _validation_needs_items(self) -> TrainConfig:
        if (self.validate_every > 0) != (self.validation_items > 0):
            raise ValueError("validate_every and validation_items: set both (validation on) or neither")
        return self
