"""Where and how one process of a training run computes: its rank under ``torchrun``, its device, the process group,
and its precision (private to [`equican.train`][equican.train])."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (one process: rank 0 of a world of 1)."""


    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_env() -> Distributed:
    """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` as ``torchrun`` sets them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def device_for(requested: str, env: Distributed) -> torch.device:
    """The device a run asks for (``"cpu"``, ``"cuda"`` or ``"auto"``) for this process: its local GPU under
    ``torchrun``."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: expected a CUDA device for 'cuda', got none (torch sees no CUDA device)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", env.local_rank)


@contextlib.contextmanager
def process_group(env: Distributed, device: torch.device) -> Iterator[None]:
    """The process group of a multi-process run (nccl on GPUs, gloo on the CPU) for the duration; nothing for one
    process."""
    if env.world == 1:
        yield
        return
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


AMP_MODES = ("off", "auto", "bf16", "fp16")
"""Values of ``TrainConfig.amp``: no autocast, the device's best reduced precision, bfloat16, float16."""


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (one of ``AMP_MODES``) on ``device``; None for ``"off"``.

    ``"auto"`` is bfloat16 on the CPU and on GPUs that support it, else float16. float16 needs CUDA (with a gradient
    scaler, see ``grad_scaler``): the CPU's autocast is made for bfloat16.

    Raises:
        ConfigError: float16 on a CPU, or bfloat16 on a GPU without it.
    """
    if amp == "off":
        return None
    cuda = device.type == "cuda"
    if amp == "auto":
        return torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and not cuda:
        raise ConfigError("amp: expected bf16 or auto on the CPU, got fp16 (float16 autocast needs a CUDA device)")
    if amp == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"amp: expected fp16 or auto on {torch.cuda.get_device_name(device)}, got bf16 (the GPU "
                          f"does not support bfloat16)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 training (its gradients underflow without one); None otherwise."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
