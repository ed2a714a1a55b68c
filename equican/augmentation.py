"""[`RandomGroupAction`][equican.augmentation.RandomGroupAction]: a random group action as a data augmentation, for
kornia's ``AugmentationSequential`` and for torchvision transform pipelines.

It is a kornia augmentation (a subclass of ``kornia.augmentation.AugmentationBase2D``), so it composes with kornia's
own augmentations, draws its per-image "apply or not" with kornia's ``p`` and keeps its parameters in kornia's
``_params`` after a call; and it is an ``nn.Module`` taking a tensor image, so it works in
``torchvision.transforms.v2.Compose`` on a single image ``(C, H, W)`` or a batch ``(B, C, H, W)``:

```python
import torch, equican
import kornia.augmentation as K
from torchvision.transforms import v2
from equican.augmentation import RandomGroupAction

monotone = RandomGroupAction(equican.make_group("monotone"), p=0.5)
kornia_pipeline = K.AugmentationSequential(K.RandomHorizontalFlip(), monotone)
torchvision_pipeline = v2.Compose([monotone, v2.RandomErasing()])
y = kornia_pipeline(torch.rand(8, 3, 32, 32))  # (8, 3, 32, 32)
z = torchvision_pipeline(torch.rand(3, 32, 32))  # (3, 32, 32)
```

Any registered group works, including those that are not affine maps (monotone scaling). The action is the group's
own ([`Group.act`][equican.group.Group.act]); for the affine-type groups, kornia's matrix of the drawn elements is
[`equican.interop.to_kornia_matrix`][equican.interop.to_kornia_matrix] of ``params["g"]``.

Masks (``AugmentationSequential(..., data_keys=["input", "mask"])``) are moved by the same elements with nearest
interpolation, so label values stay labels and the mask's dtype (integer or float) is kept; an image the gate ``p``
leaves unchanged leaves its mask unchanged. Boxes and keypoints are not supported (kornia raises its own error), and
``AugmentationSequential.inverse`` does not undo the action (kornia inverts only its matrix-based geometric
augmentations); use ``group.act(group.inverse(params["g"]), y)`` instead.
"""

from __future__ import annotations

from typing import Any

import torch
from kornia.augmentation import AugmentationBase2D

from . import validation as V
from .errors import ConfigError, DTypeError
from .group import Group, make_group

__all__ = ["RandomGroupAction"]


class RandomGroupAction(AugmentationBase2D):
    """Act on each image by a random element of ``group`` (drawn by [`Group.sample`][equican.group.Group.sample]),
    with probability ``p``.

    Args:
        group: a [`Group`][equican.group.Group] or a registered group name.
        p: probability of acting on each image (the others pass unchanged); kornia draws it per image.
        generator: the ``torch.Generator`` the elements are drawn from; None: a generator seeded from the global
            torch RNG at every call, so ``torch.manual_seed`` reproduces a pipeline, as with kornia's and
            torchvision's own augmentations.
        same_on_batch: one element for the whole batch.
        keepdim: return a single image ``(C, H, W)`` as ``(C, H, W)`` (True, the default, as torchvision pipelines
            expect) or as ``(1, C, H, W)`` (False, kornia's default).
        group_options: keyword arguments of [`make_group`][equican.group.make_group] when ``group`` is a name.

    Shapes:
        ``(B, C, H, W)`` or ``(C, H, W)`` -> the same shape and dtype (float16/bfloat16 images are acted on in
        float32 and cast back). The elements of the last call are in ``self._params["g"]``, ``(B, *param_shape)``,
        float32 (float64 for a float64 input).

    Raises:
        ConfigError: ``p`` outside ``[0, 1]``, or ``group`` neither a Group nor a registered name.
    """

    def __init__(self, group: Group | str, p: float = 0.5, *, generator: torch.Generator | None = None,
                 same_on_batch: bool = False, keepdim: bool = True,
                 group_options: dict[str, Any] | None = None) -> None:
        where = "RandomGroupAction"
        V.require_number(p, low=0.0, high=1.0, where=where, name="p")
        if isinstance(group, str):
            group = make_group(group, **dict(group_options or {}))
        elif not isinstance(group, Group):
            raise ConfigError(f"{where}: expected group to be an equican.Group or a registered name, "
                              f"got {type(group).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise DTypeError(f"{where}: expected generator to be a torch.Generator or None, "
                             f"got {type(generator).__name__}")
        super().__init__(p=float(p), same_on_batch=same_on_batch, keepdim=keepdim)
        self.group = group
        self.generator = generator

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """``{"g": elements (B, *param_shape)}``, float32 on the CPU (moved to the input's device when applied)."""
        generator = self.generator
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        batch = batch_shape[0]
        g = self.group.sample(1 if self.same_on_batch else batch, generator=generator, dtype=torch.float32)
        if self.same_on_batch:
            g = g.expand(batch, *g.shape[1:]).contiguous()
        return {"g": g}

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        """``group.act(params["g"], input)`` for ``input: (B, C, H, W)``; the result has ``input``'s shape and
        dtype."""
        dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        g = params["g"].to(device=input.device, dtype=dtype)
        return self.group.act(g, torch.as_tensor(input))

    def apply_non_transform_mask(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                                 transform: torch.Tensor | None = None) -> torch.Tensor:
        """The mask ``(B, C, H, W)`` of an image the gate ``p`` left unchanged: returned as it is."""
        return input

    def apply_transform_mask(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                             transform: torch.Tensor | None = None) -> torch.Tensor:
        """Masks ``(B, C, H, W)`` (any real or integer dtype) moved by ``params["g"]`` with nearest interpolation:
        the mask at ``g⁻¹·u`` for each output point ``u``, 0 outside the input. Works for every group: the points
        ``g⁻¹·u`` are the group's own action on an image of the coordinates (bilinear sampling of a linear
        function is exact), normalized by its action on ones so that the border pixels are their own."""
        b, _, h, w = input.shape
        wide = torch.float64 if input.dtype in (torch.float64, torch.int64, torch.int32) else torch.float32
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=input.device, dtype=wide),
                                torch.linspace(-1, 1, w, device=input.device, dtype=wide), indexing="ij")
        coords = torch.stack([xs, ys, torch.ones_like(xs)]).expand(b, 3, h, w)
        g = params["g"].to(device=input.device, dtype=wide)
        moved = self.group.act(g, coords)
        inside = moved[:, 2:] > 0.5
        grid = (moved[:, :2] / moved[:, 2:].clamp_min(1e-6)).permute(0, 2, 3, 1)
        out = torch.nn.functional.grid_sample(input.to(wide), grid, mode="nearest", padding_mode="zeros",
                                              align_corners=True)
        return torch.where(inside, out, torch.zeros_like(out)).to(input.dtype)

    def forward(self, input: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
                **kwargs: Any) -> torch.Tensor:
        """Act on ``input`` of shape ``(B, C, H, W)`` or ``(C, H, W)``; the result has its shape and dtype.

        kornia's forward; a torchvision ``tv_tensors.Image`` comes back as one (torchvision pipelines keep the type to
        dispatch later transforms).
        """
        V.require_tensor(input, where="RandomGroupAction", name="input")
        if input.dtype not in (*V.FLOAT_DTYPES, *V.REDUCED_FLOAT_DTYPES):
            raise DTypeError(f"RandomGroupAction: expected input of dtype float16, bfloat16, float32 or float64, "
                             f"got {input.dtype}")
        out = super().forward(input, params, **kwargs)
        if type(input) is not torch.Tensor and isinstance(input, torch.Tensor) and type(out) is torch.Tensor:
            try:
                from torchvision import tv_tensors

                if isinstance(input, tv_tensors.TVTensor):
                    return tv_tensors.wrap(out, like=input)
            except ImportError:  # torchvision is optional here
                pass
        return out

    def __repr__(self) -> str:
        return f"RandomGroupAction(group={self.group!r}, p={self.p}, same_on_batch={self.same_on_batch})"
