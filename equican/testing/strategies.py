"""Hypothesis strategies for group elements and test images.

Hypothesis draws only small integers (a seed, a batch size); the tensors themselves come from the group's own
[`sample`][equican.group.Group.sample] and from [`equican.testing.images`][equican.testing.images], seeded with that
integer. So every example is a realistic element at the group's configured strength, a failing example is reported as a
seed you can replay, and shrinking moves towards seed 0 and batch 1.

For example:

```python
from hypothesis import given
from equican.testing import strategies as eqst

@given(pair=eqst.elements_and_images(my_group))
def test_round_trip(pair):
    g, x = pair
    ...
```
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from .. import validation as V
from ..group import Group
from .images import band_limited_images, check_image_request, white_noise_images

__all__ = ["seeds", "batch_sizes", "elements", "images", "elements_and_images"]

_MAX_SEED = 2**32 - 1


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator.manual_seed``: integers in ``[0, 2**32)``."""
    return st.integers(min_value=0, max_value=_MAX_SEED)


def batch_sizes(max_batch: int = 4) -> st.SearchStrategy[int]:
    """Batch sizes ``1 .. max_batch``."""
    V.require_int(max_batch, low=1, where="batch_sizes", name="max_batch")
    return st.integers(min_value=1, max_value=max_batch)


def _generator(seed: int, device: torch.device | str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def elements(group: Group, *, max_batch: int = 4, dtype: torch.dtype = torch.float64,
             device: torch.device | str = "cpu") -> st.SearchStrategy[torch.Tensor]:
    """Batches of elements ``(B, *group.param_shape)``, ``1 <= B <= max_batch``, from ``group.sample``.

    Hypothesis draws a seed and ``B``; the group samples with ``torch.Generator(device).manual_seed(seed)``, so the
    elements follow the group's own distribution (its configured strength).
    """
    V.require_group(group, where="elements")
    return st.builds(lambda seed, batch: group.sample(batch, generator=_generator(seed, device), device=device,
                                                      dtype=dtype),
                     seeds(), batch_sizes(max_batch))


def images(*, batch: int | None = None, max_batch: int = 4, channels: int = 1, size: int = 32,
           band_limited: bool = True, dtype: torch.dtype = torch.float64,
           device: torch.device | str = "cpu") -> st.SearchStrategy[torch.Tensor]:
    """Image batches ``(B, channels, size, size)``: [`band_limited_images`][equican.testing.images.band_limited_images]
    by default.

    Args:
        batch: a fixed batch size ``B``; None lets hypothesis draw ``1 <= B <= max_batch``.
        max_batch: the largest drawn batch size.
        channels: channels per image.
        size: height and width.
        band_limited: True for smooth images inside a central disc (for approximate groups), False for white noise
            (for exact groups, whose laws must hold on any image).
        dtype: the images' dtype.
        device: where the images are made.
    """
    check_image_request(channels, size, dtype, where="images")
    make = band_limited_images if band_limited else white_noise_images
    batches = batch_sizes(max_batch) if batch is None else st.just(batch)
    return st.builds(lambda seed, b: make(b, channels, size, generator=_generator(seed, device), dtype=dtype,
                                          device=device),
                     seeds(), batches)


def elements_and_images(group: Group, *, max_batch: int = 4, channels: int = 1, size: int = 32,
                        dtype: torch.dtype = torch.float64,
                        device: torch.device | str = "cpu") -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs ``(g, x)`` with one batch size: ``g: (B, *param_shape)``, ``x: (B, channels, size, size)``.

    The images are white noise for ``group.exact`` groups and band-limited otherwise, as in the group laws.
    """

    @st.composite
    def pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
        g = draw(elements(group, max_batch=max_batch, dtype=dtype, device=device))
        x = draw(images(batch=g.shape[0], channels=channels, size=size, band_limited=not group.exact,
                        dtype=dtype, device=device))
        return g, x

    return pairs()
