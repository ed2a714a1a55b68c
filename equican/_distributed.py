"""One process of a training run: its rank under ``torchrun``, its device, and the process group (private to
[`equican.train`][equican.train])."""

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
