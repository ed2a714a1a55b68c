"""Test images for the group laws: band-limited images for approximate groups, white noise for exact ones.

The measured tolerances of every group ([`equican.Group.tolerance`][equican.group.Group.tolerance]) are defined relative
to the protocol written down here, so its constants are part of the public contract:

* [`NOISE_PERIOD`][equican.testing.images.NOISE_PERIOD] (8 pixels): the images are bicubic upsamplings of uniform noise
  drawn on a coarse lattice with one node every 8 pixels (the issue's benchmark protocol: 8×8 noise for 64×64 images).
  Bilinear resampling errs by about ``f''/8`` per resampling, so the period sets the size of the action laws' errors:
  with 8 pixels two resamplings of these ``[0, 1]`` images err by at most about 0.04, while the largest difference
  between neighbouring pixels is about 0.11 per image, so a group that misplaces content by a pixel fails the action
  laws (sub-pixel errors are for the element laws to catch).
* [`WINDOW_RADIUS`][equican.testing.images.WINDOW_RADIUS] (0.75 in normalized coordinates): the noise is multiplied by a
  Hann window ``cos²(π r / (2·0.75))`` of the distance ``r`` to the image centre, and is exactly 0 for ``r ≥ 0.75``. So
  the content stays inside a central disc: rotations never carry it off the square, nor do magnifications up to
  ``e^0.28`` (``0.75·e^0.28 < 1``), so zero padding only ever reads where the true image is 0 as well. A window with a
  sharp edge adds its own curvature to the resampling error (a cosine taper 4 pixels wide tripled the measured errors),
  hence the taper over the whole radius.
* [`interior`][equican.testing.images.interior]: the action laws of approximate groups compare only the pixels at least
  ``size // 8`` from the border. Within the default strengths the window already keeps zero padding out of the
  comparison; the crop keeps the laws about the group rather than about the padding convention for stronger or
  translating groups.

Every image is generated in float64 on the generator's device and then converted, so one seed gives the same
images (up to rounding) in every dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import validation as V
from ..errors import DTypeError

__all__ = ["NOISE_PERIOD", "WINDOW_RADIUS", "band_limited_images", "white_noise_images", "radial_window",
           "interior", "interior_margin"]

NOISE_PERIOD = 8
"""Pixels between the nodes of the coarse noise lattice of
[`band_limited_images`][equican.testing.images.band_limited_images]."""

WINDOW_RADIUS = 0.75
"""Radius (normalized coordinates) outside which [`band_limited_images`][equican.testing.images.band_limited_images] is
exactly zero."""


def check_image_request(channels: int, size: int, dtype: torch.dtype, *, where: str) -> None:
    """Raise a typed error unless ``channels >= 1``, ``size >= 2`` are ints and ``dtype`` is float32/float64."""
    for key, value, low in (("channels", channels, 1), ("size", size, 2)):
        V.require_int(value, low=low, where=where, name=key)
    if dtype not in V.FLOAT_DTYPES:
        raise DTypeError(f"{where}: expected dtype float32 or float64, got {dtype}")


def _check_request(batch: int, channels: int, size: int, generator: torch.Generator, dtype: torch.dtype,
                   *, where: str) -> None:
    V.require_batch_size(batch, where=where)
    check_image_request(channels, size, dtype, where=where)
    if not isinstance(generator, torch.Generator):
        raise DTypeError(f"{where}: expected generator to be a torch.Generator, got {type(generator).__name__}")


def radial_window(size: int, *, dtype: torch.dtype = torch.float64,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The Hann window ``cos²(π r / (2·WINDOW_RADIUS))`` (0 beyond the radius) on a ``size × size`` image.

    Returns:
        ``(size, size)``: 1 at the centre, 0 at distance [`WINDOW_RADIUS`][equican.testing.images.WINDOW_RADIUS] and
        beyond (``r`` is measured in normalized coordinates with ``align_corners=True``, so the window is the same shape
        at every size).
    """
    u = torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
    r = torch.sqrt(u[None, :] ** 2 + u[:, None] ** 2)
    # cos(π/2) rounds to 6e-17, not 0: zero the outside explicitly so that "exactly 0" holds.
    window = torch.where(r < WINDOW_RADIUS, torch.cos(0.5 * math.pi * r / WINDOW_RADIUS) ** 2, 0.0)
    return window.to(device=device, dtype=dtype)


def band_limited_images(batch: int, channels: int, size: int, *, generator: torch.Generator,
                        dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Smooth random images confined to a central disc: the test images of the approximate groups' laws.

    Uniform noise on a lattice with one node every [`NOISE_PERIOD`][equican.testing.images.NOISE_PERIOD] pixels is
    upsampled bicubically and multiplied by [`radial_window`][equican.testing.images.radial_window]. Bicubic
    interpolation overshoots slightly, so values lie in about ``[-0.1, 1.1]`` (inside the disc) and are exactly 0
    outside it. See the module docstring for why these choices.

    Args:
        batch: number of images ``B``.
        channels: channels ``C``.
        size: height and width.
        generator: the only source of randomness; its device is where the noise is drawn.
        dtype: float32 or float64 (the images are made in float64 and converted).
        device: where the result lives.

    Returns:
        ``(B, C, size, size)`` images.
    """
    where = "band_limited_images"
    _check_request(batch, channels, size, generator, dtype, where=where)
    # A lattice that overhangs the image by a node or more on each side, so that no border effect of the bicubic
    # upsampling reaches the image; the upsampled noise is then cropped centrally.
    nodes = size // NOISE_PERIOD + 4
    coarse = torch.rand(batch, channels, nodes, nodes, generator=generator, device=generator.device,
                        dtype=torch.float64)
    fine = F.interpolate(coarse, scale_factor=NOISE_PERIOD, mode="bicubic", align_corners=False)
    start = (fine.shape[-1] - size) // 2
    fine = fine[..., start:start + size, start:start + size]
    images = fine * radial_window(size, device=fine.device)
    return images.to(device=device, dtype=dtype)


def white_noise_images(batch: int, channels: int, size: int, *, generator: torch.Generator,
                       dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Independent uniform ``[0, 1)`` pixels: the test images of exact groups, whose laws must hold on any image.

    Returns:
        ``(B, C, size, size)`` images (arguments as in
        [`band_limited_images`][equican.testing.images.band_limited_images]).
    """
    _check_request(batch, channels, size, generator, dtype, where="white_noise_images")
    noise = torch.rand(batch, channels, size, size, generator=generator, device=generator.device,
                       dtype=torch.float64)
    return noise.to(device=device, dtype=dtype)


def interior_margin(height: int, width: int) -> tuple[int, int]:
    """Pixels dropped from each side by [`interior`][equican.testing.images.interior]: ``(height // 8, width // 8)``."""
    return height // 8, width // 8


def interior(t: torch.Tensor) -> torch.Tensor:
    """The central crop of ``t: (..., H, W)`` that the approximate groups' action laws compare.

    Returns:
        A view ``(..., H - 2·(H // 8), W - 2·(W // 8))``.
    """
    mh, mw = interior_margin(t.shape[-2], t.shape[-1])
    return t[..., mh:t.shape[-2] - mh, mw:t.shape[-1] - mw]
