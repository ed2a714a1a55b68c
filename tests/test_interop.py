"""kornia interoperation (equican.interop) and the random group action augmentation (equican.augmentation)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from equican import make_group
from equican.augmentation import RandomGroupAction
from equican.errors import ConfigError, DTypeError, InvalidElementError, ShapeError
from equican.interop import from_kornia_matrix, has_matrix_form, to_kornia_matrix, to_normalized_matrix

kornia = pytest.importorskip("kornia")
from kornia.geometry.transform import warp_affine, warp_perspective  # noqa: E402

MATRIX_GROUPS = ["affine", "rotation", "scale", "cyclic"]
# kornia's warp_affine and the group's act do the same bilinear interpolation from the same pixel matrix: they differ
# by rounding in the grid arithmetic only, which grows with the image's side. Measured over 30 seeds in float32
# (values in [0, 1]): ≤ 3.9e-6 at 16×16, ≤ 5.6e-6 at 15×21 (≤ 1.4e-5 at 32×48); ≤ 1e-13 in float64.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def images(b, h, w, dtype=torch.float32, device="cpu", seed=0):
    return torch.rand(b, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


@pytest.mark.parametrize("name", MATRIX_GROUPS)
@pytest.mark.parametrize("size", [(15, 21), (16, 16)])
@pytest.mark.parametrize("align_corners", [True, False])
def test_to_kornia_matrix_matches_warp_affine(name, size, align_corners, device, dtype):
    group = make_group(name)
    if name == "cyclic" and size[0] != size[1]:
        pytest.skip("quarter turns of a non-square image change its shape")
    g = group.sample(4, generator=torch.Generator().manual_seed(3), dtype=dtype, device=device)
    x = images(4, *size, dtype=dtype, device=device)
    m = to_kornia_matrix(group, g, size)
    assert m.shape == (4, 3, 3) and m.dtype == dtype
    expected = group.act(g, x)
    assert (warp_affine(x, m[:, :2], size, align_corners=align_corners) - expected).abs().max() <= TOL[dtype]
    assert (warp_perspective(x, m, size, align_corners=align_corners) - expected).abs().max() <= 10 * TOL[dtype]


@pytest.mark.parametrize("name", MATRIX_GROUPS)
def test_round_trip(name, dtype):
    group = make_group(name)
    g = group.sample(5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    back = from_kornia_matrix(group, to_kornia_matrix(group, g, (17, 23)), (17, 23))
    assert (group.distance(back, g)).max() <= 1e3 * torch.finfo(dtype).eps


def test_a_pixel_matrix_is_not_a_normalized_element():
    """The silent mistake the conversion exists for: a pixel matrix passed to the affine group as it is."""
    affine = make_group("affine")
    g = affine.sample(2, generator=torch.Generator().manual_seed(0))
    x = images(2, 16, 16)
    m = to_kornia_matrix(affine, g, (16, 16))
    assert (affine.act(m[:, :2].contiguous(), x) - affine.act(g, x)).abs().max() > 0.1
    assert (affine.act(from_kornia_matrix(affine, m, (16, 16)), x) - affine.act(g, x)).abs().max() < 1e-5


@pytest.mark.parametrize("align_corners", [True, False])
def test_random_affine_transform_matrix(align_corners):
    """kornia's RandomAffine image equals the affine group's act of its transform_matrix, converted."""
    import kornia.augmentation as K

    torch.manual_seed(0)
    aug = K.RandomAffine(degrees=40, translate=(0.1, 0.2), scale=(0.7, 1.3), shear=15, p=1.0,
                         align_corners=align_corners)
    x = images(6, 20, 28)
    y = aug(x)
    g = from_kornia_matrix(make_group("affine"), aug.transform_matrix, (20, 28))
    assert (make_group("affine").act(g, x) - y).abs().max() < 1e-5
    # A pure rotation from kornia is an element of the rotation group too.
    rot = K.RandomRotation(degrees=90, p=1.0, align_corners=align_corners)
    y = rot(x)
    theta = from_kornia_matrix(make_group("rotation"), rot.transform_matrix, (20, 28))
    assert (make_group("rotation").act(theta, x) - y).abs().max() < 1e-5


def test_rotation_convention_by_hand():
    """A quarter turn is rot90 (counter-clockwise on screen) in both worlds."""
    rotation = make_group("rotation")
    x = images(1, 9, 9, dtype=torch.float64)
    m = to_kornia_matrix(rotation, torch.tensor([[math.pi / 2]], dtype=torch.float64), (9, 9))
    assert torch.allclose(warp_affine(x, m[:, :2], (9, 9), align_corners=True), torch.rot90(x, 1, (-2, -1)),
                          atol=1e-12)


def test_conversion_errors():
    rotation, affine = make_group("rotation"), make_group("affine")
    shear = torch.tensor([[[1.0, 0.3, 0.0], [0.0, 1.0, 0.0]]])
    with pytest.raises(InvalidElementError, match="largest distance"):
        from_kornia_matrix(rotation, shear, (16, 16))  # a shear is no rotation
    with pytest.raises(InvalidElementError, match="det A <= 0"):
        from_kornia_matrix(affine, torch.tensor([[[-1.0, 0.0, 15.0], [0.0, 1.0, 0.0]]]), (16, 16))  # a mirror
    with pytest.raises(InvalidElementError, match="projective"):
        from_kornia_matrix(affine, torch.tensor([[[1.0, 0, 0], [0, 1, 0], [1e-2, 0, 1]]]), (16, 16))
    with pytest.raises(InvalidElementError, match="multiples"):
        from_kornia_matrix(make_group("cyclic"), to_kornia_matrix(rotation, torch.tensor([[0.3]]), (16, 16)),
                           (16, 16))
    with pytest.raises(ConfigError, match="affine maps"):
        to_kornia_matrix(make_group("monotone"), make_group("monotone").identity(1), (16, 16))
    assert not has_matrix_form(make_group("monotone")) and has_matrix_form(make_group("cyclic"))
    with pytest.raises(ShapeError, match=r"expected m of shape \(B, 2, 3\) or \(B, 3, 3\), got \(2, 3\)"):
        from_kornia_matrix(affine, torch.eye(2, 3), (16, 16))
    with pytest.raises(ShapeError, match="size"):
        to_kornia_matrix(affine, affine.identity(1), (16,))
    with pytest.raises(DTypeError, match="got torch.int64"):
        from_kornia_matrix(affine, torch.zeros(1, 2, 3, dtype=torch.long), (16, 16))
    with pytest.raises(ShapeError):
        to_normalized_matrix(affine, torch.zeros(1, 3), (16, 16))


# ---------------------------------------------------------------------------------------------- augmentation
def test_random_group_action_in_kornia_sequential():
    import kornia.augmentation as K

    group = make_group("monotone")
    action = RandomGroupAction(group, p=0.5)
    pipeline = K.AugmentationSequential(K.RandomHorizontalFlip(p=0.0), action)
    x = images(16, 24, 24)
    torch.manual_seed(0)
    y = pipeline(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    applied = action._params["batch_prob"] > 0.5
    assert 0 < int(applied.sum()) < 16  # p = 0.5 acts on some images and not others
    expected = group.act(action._params["g"], x)
    assert torch.equal(y[~applied], x[~applied])
    assert (y[applied] - expected[applied]).abs().max() < 1e-6
    torch.manual_seed(0)
    assert torch.equal(pipeline(x), y)  # torch.manual_seed reproduces the pipeline


def test_random_group_action_in_torchvision_compose():
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    group = make_group("rotation")
    action = RandomGroupAction(group, p=1.0, generator=torch.Generator().manual_seed(4))
    pipeline = v2.Compose([action, v2.ToDtype(torch.float64)])
    single = images(1, 20, 20)[0]
    out = pipeline(single)
    assert out.shape == single.shape and out.dtype == torch.float64
    expected = group.act(group.sample(1, generator=torch.Generator().manual_seed(4)), single[None])[0]
    assert (out.float() - expected).abs().max() < 1e-6
    batch = images(3, 20, 20)
    assert pipeline(batch).shape == batch.shape
    assert isinstance(pipeline(tv_tensors.Image(single)), tv_tensors.Image)
    # p = 0 is the identity.
    assert torch.equal(RandomGroupAction(group, p=0.0)(batch), batch)


def test_random_group_action_same_on_batch_and_dtypes():
    action = RandomGroupAction("scale", p=1.0, same_on_batch=True, generator=torch.Generator().manual_seed(0))
    y = action(images(3, 16, 16).bfloat16())
    assert y.dtype == torch.bfloat16
    g = action._params["g"]
    assert torch.equal(g, g[:1].expand_as(g))
    y = action(images(2, 16, 16, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_random_group_action_errors():
    with pytest.raises(ConfigError, match="p"):
        RandomGroupAction("rotation", p=1.5)
    with pytest.raises(ConfigError, match="expected group"):
        RandomGroupAction(3)
    with pytest.raises(DTypeError, match="generator"):
        RandomGroupAction("rotation", generator=0)
    with pytest.raises(DTypeError, match="got torch.int64"):
        RandomGroupAction("rotation", p=1.0)(torch.zeros(1, 1, 8, 8, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- issue 25, item 6
def test_random_group_action_moves_masks_with_nearest_interpolation():
    import kornia.augmentation as K

    size = (24, 40)
    mask = torch.randint(0, 5, (4, 1, *size), generator=torch.Generator().manual_seed(0))
    for name in ("rotation", "affine", "scale"):
        group = make_group(name)
        torch.manual_seed(1)
        pipeline = K.AugmentationSequential(RandomGroupAction(group, p=1.0), data_keys=["input", "mask"])
        y, moved = pipeline(images(4, *size), mask)
        g = pipeline[0]._params["g"]
        assert moved.dtype == mask.dtype and moved.shape == mask.shape
        assert (y - group.act(g, images(4, *size))).abs().max() < 1e-6  # the images moved by the same elements
        # kornia's own nearest warp with the elements' pixel matrices: the same mask, pixel for pixel.
        m = to_kornia_matrix(group, g, size)
        reference = warp_affine(mask.double(), m[:, :2].double(), size, mode="nearest", align_corners=True)
        assert torch.equal(moved, reference.long())
        assert not torch.equal(moved, mask)  # negative control: the mask did move
    # Groups without a matrix form: labels stay labels, and exact groups move masks exactly as images.
    monotone = K.AugmentationSequential(RandomGroupAction("monotone", p=1.0), data_keys=["input", "mask"])
    _, moved = monotone(images(4, *size), mask)
    assert set(moved.unique().tolist()) <= set(range(5))
    cyclic = make_group("cyclic")
    square = mask[..., :24]
    pipeline = K.AugmentationSequential(RandomGroupAction(cyclic, p=1.0), data_keys=["input", "mask"])
    _, moved = pipeline(images(4, 24, 24), square.float())
    assert torch.equal(moved, cyclic.act(pipeline[0]._params["g"], square.float()))


def test_random_group_action_leaves_the_masks_of_unmoved_images_unchanged():
    import kornia.augmentation as K

    mask = torch.randint(0, 3, (16, 1, 20, 20), generator=torch.Generator().manual_seed(2)).float()
    pipeline = K.AugmentationSequential(RandomGroupAction("rotation", p=0.5), data_keys=["input", "mask"])
    torch.manual_seed(0)
    _, moved = pipeline(images(16, 20, 20), mask)
    applied = pipeline[0]._params["batch_prob"] > 0.5
    assert 0 < int(applied.sum()) < 16
    assert torch.equal(moved[~applied], mask[~applied])
    assert not torch.equal(moved[applied], mask[applied])


def test_kornia_page_snippets_hold_on_every_seed():
    """docs/concepts/kornia.md asserted < 1e-5 on unseeded data and failed on 6 of 9 seeds (max 1.1e-5)."""
    from test_readme import python_blocks

    text = (Path(__file__).resolve().parents[1] / "docs" / "concepts" / "kornia.md").read_text(encoding="utf-8")
    code = "\n\n".join(python_blocks(text))
    assert "torch.manual_seed(0)" in code
    for seed in range(9):
        exec(compile(code.replace("torch.manual_seed(0)", f"torch.manual_seed({seed})"), "kornia.md", "exec"), {})
    # Negative control: the old tolerance fails on some seed at this size.
    worst = 0.0
    affine = make_group("affine")
    for seed in range(9):
        torch.manual_seed(seed)
        g = affine.sample(4, generator=torch.Generator().manual_seed(0))
        x = torch.rand(4, 3, 32, 48)
        m = to_kornia_matrix(affine, g, (32, 48))
        worst = max(worst, float((warp_affine(x, m[:, :2], (32, 48), align_corners=True) - affine.act(g, x))
                                 .abs().max()))
    assert 1e-5 < worst < 3e-5
