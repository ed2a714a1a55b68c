"""Per-index random generators: reproducible random access into generated datasets and metric draws.

A dataset item ``i`` (or the ``n``-th sample a metric sees) draws its randomness from a generator derived from
``(seed, i, ...)`` alone, never from a generator shared across items. So item ``i`` is the same whether it is read
first or last, alone or in a batch, by one worker or several, and a metric gives the same value for any batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["index_generator", "keyed_elements"]


def index_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *keys)``, e.g. ``index_generator(seed, index, stream)``.

    The key is hashed with NumPy's ``SeedSequence``, so nearby keys (index 7 and 8, stream 0 and 1) give unrelated
    streams; seeding with ``seed + index`` directly would make item ``i`` of seed ``s + 1`` repeat item ``i + 1`` of
    seed ``s``. (CPU generators keep 32 bits of their seed, so distinct keys collide with probability 2⁻³².)

    Args:
        seed: a non-negative int.
        keys: further non-negative ints (an item index, a stream number, ...).

    Returns:
        A new ``torch.Generator`` on the CPU.

    Raises:
        ConfigError: ``seed`` or a key is not a non-negative int.
    """
    for name, value in (("seed", seed), *((f"key {i}", k) for i, k in enumerate(keys))):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"index_generator: expected {name} to be a non-negative int, got {value!r}")
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]))


def keyed_elements(group: Any, seed: int, keys: Iterable[Sequence[int]], *, device: torch.device | str,
                   dtype: torch.dtype) -> torch.Tensor:
    """One random element of ``group`` per key, each from its own ``index_generator(seed, *key)``.

    What makes random transformations independent of batching, ordering and the number of processes: a metric
    keys its ``n``-th sample by ``(n,)``, a training method its sample ``i`` in epoch ``e`` by ``(stream, e, i)``.

    Args:
        group: a [`Group`][equican.group.Group].
        seed: a non-negative int.
        keys: one tuple of non-negative ints per element.
        device: where the elements are put.
        dtype: the elements' dtype.

    Returns:
        ``(len(keys), *group.param_shape)``.
    """
    return torch.cat([group.sample(1, generator=index_generator(seed, *key), device=device, dtype=dtype)
                      for key in keys])
