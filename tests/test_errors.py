"""Bad input raises the typed errors of :mod:`equican.errors`, with "where: expected ..., got ..." messages.

Registry-parametrized where the check is generic (every group validates shapes, dtypes, finiteness, batch sizes and
devices the same way), and written out per group where the invalid element is group-specific.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from equican import Group, group_class, list_groups, make_group
from equican.errors import (ConfigError, DeviceError, DTypeError, EquicanError, InvalidElementError, NonFiniteError,
                            RegistrationError, ShapeError, UnknownNameError)
from equican.testing import (assert_equivariant, assert_invariant, band_limited_images, check_group_laws, images,
                             run_law, white_noise_images)

MESSAGE = re.compile(r"^[\w.()']+( ?\w+)*: expected .+, got .+", re.DOTALL)


def sample(group, batch=2, dtype=torch.float64, seed=0):
    return group.sample(batch, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def image_batch(batch=2, dtype=torch.float64, size=16):
    return white_noise_images(batch, 1, size, generator=torch.Generator().manual_seed(0), dtype=dtype)


def raises(error, fn, *args, **kwargs):
    """Call ``fn`` expecting ``error``; check the message pattern and return it."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert MESSAGE.match(message), f"message does not follow 'where: expected ..., got ...': {message!r}"
    return message


def test_errors_are_also_standard_exceptions():
    assert issubclass(ShapeError, ValueError) and issubclass(DTypeError, TypeError)
    assert issubclass(UnknownNameError, LookupError) and issubclass(NonFiniteError, ValueError)
    for error in (ShapeError, DTypeError, DeviceError, NonFiniteError, InvalidElementError, UnknownNameError,
                  RegistrationError, ConfigError):
        assert issubclass(error, EquicanError)


# ---------------------------------------------------------------------------------------------- shapes
def test_wrong_image_rank(group):
    g, x = sample(group), image_batch()
    message = raises(ShapeError, group.act, g, x[0])
    assert "expected x of shape (B, C, H, W), got (1, 16, 16)" in message
    raises(ShapeError, group.act, g, x[..., None])


def test_wrong_parameter_shape(group):
    g, x = sample(group), image_batch()
    wrong = g[..., None]
    expected = f"expected g of shape (B, {', '.join(map(str, group.param_shape))})"
    assert expected in raises(ShapeError, group.act, wrong, x)
    for method, args in (("compose", (wrong, g)), ("inverse", (wrong,)), ("distance", (wrong, g)),
                         ("to_unconstrained", (wrong,)), ("check", (wrong,))):
        raises(ShapeError, getattr(group, method), *args)
    assert "expected h of shape" in raises(ShapeError, group.compose, g, wrong)
    z = torch.zeros(2, *group.unconstrained_shape, 1, dtype=torch.float64)
    assert "expected z of shape" in raises(ShapeError, group.from_unconstrained, z)


def test_batch_mismatch(group):
    g, x = sample(group, batch=2), image_batch(batch=3)
    assert "same batch size, got 2 and 3" in raises(ShapeError, group.act, g, x)
    assert "same batch size" in raises(ShapeError, group.compose, g, sample(group, batch=3))


def test_bad_batch_argument(group):
    raises(ShapeError, group.identity, -1)
    raises(ShapeError, group.sample, 2.0, generator=torch.Generator())
    raises(ShapeError, group.identity, True)


def test_images_too_small(group):
    g = sample(group, batch=1)
    raises(ShapeError, group.act, g, torch.zeros(1, 1, 1, 8, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- values
def test_non_finite_values(group):
    g, x = sample(group), image_batch()
    bad_g = g.clone()
    bad_g.view(-1)[0] = math.nan
    assert "NaN/inf" in raises(NonFiniteError, group.act, bad_g, x)
    raises(NonFiniteError, group.inverse, bad_g)
    bad_x = x.clone()
    bad_x[1, 0, 3, 4] = math.inf
    assert "first at index (1, 0, 3, 4)" in raises(NonFiniteError, group.act, g, bad_x)
    z = torch.full((2, *group.unconstrained_shape), math.nan, dtype=torch.float64)
    raises(NonFiniteError, group.from_unconstrained, z)


def test_affine_det_not_positive():
    affine = make_group("affine")
    mirror = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    singular = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 1.0, 0.0]]], dtype=torch.float64)
    for g in (mirror, singular):
        assert "det A <= 0" in raises(InvalidElementError, affine.act, g, image_batch(batch=1))
        raises(InvalidElementError, affine.inverse, g)


def test_monotone_border_moved_or_outside_the_square():
    monotone = make_group("monotone")
    g = monotone.identity(1, dtype=torch.float64)
    moved = g.clone()
    moved[0, 0, 5, 0] = -0.9  # a node of the left border column leaves x = -1
    assert "does not fix the square's border" in raises(InvalidElementError, monotone.act, moved, image_batch(1))
    outside = g.clone()
    outside[0, 1, 5, 5] = 1.5
    assert "outside [-1, 1]" in raises(InvalidElementError, monotone.inverse, outside)


def test_cyclic_angle_off_the_lattice():
    c4 = make_group("cyclic")
    off = torch.tensor([[0.3]], dtype=torch.float64)
    assert "not multiples of 2π/4" in raises(InvalidElementError, c4.act, off, image_batch(1))
    c4.check(torch.tensor([[math.pi / 2], [-math.pi]], dtype=torch.float64))  # on the lattice: fine


def test_cyclic_quarter_turns_need_square_images():
    c4 = make_group("cyclic")
    quarter = torch.tensor([[math.pi / 2]], dtype=torch.float64)
    raises(ShapeError, c4.act, quarter, torch.zeros(1, 1, 8, 12, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- dtypes, devices
@pytest.mark.parametrize("bad", [torch.int64, torch.bool, torch.float16, torch.bfloat16])
def test_unsupported_dtypes(group, bad):
    g, x = sample(group), image_batch()
    if bad in (torch.int64, torch.bool):
        assert f"got {bad}" in raises(DTypeError, group.act, g, x.to(bad))
    else:  # reduced-precision images are acted on in float32 (tests/test_amp.py); elements must stay float32/64
        assert group.act(g, x.to(bad)).dtype == bad
        assert f"expected g of dtype float32 or float64, got {bad}" in raises(DTypeError, group.act, g.to(bad),
                                                                                x.to(bad))
    raises(DTypeError, group.act, g.to(bad), x)
    raises(DTypeError, group.identity, 2, dtype=bad)
    raises(DTypeError, group.sample, 2, generator=torch.Generator(), dtype=bad)


def test_mixed_dtypes(group):
    g, x = sample(group, dtype=torch.float32), image_batch(dtype=torch.float64)
    assert "one dtype, got torch.float32 and torch.float64" in raises(DTypeError, group.act, g, x)


def test_not_a_tensor(group):
    raises(DTypeError, group.inverse, [[0.0]])
    raises(DTypeError, group.sample, 2, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch(group):
    g, x = sample(group), image_batch()
    assert "on one device" in raises(DeviceError, group.act, g.cuda(), x)
    raises(DeviceError, group.compose, g.cuda(), g)


# ---------------------------------------------------------------------------------------------- registry, config
def test_unknown_name_lists_the_registered_names_and_the_closest_match():
    message = raises_unknown("rotaton")
    for name in list_groups():
        assert name in message
    assert "did you mean 'rotation'?" in message
    assert "did you mean" not in raises_unknown("zzzzzz")


def raises_unknown(name):
    with pytest.raises(UnknownNameError) as info:
        make_group(name)
    with pytest.raises(UnknownNameError):
        group_class(name)
    return str(info.value)


def test_duplicate_registration():
    with pytest.raises(RegistrationError, match="the name is taken by equican_groups.rotation.Rotation2d"):
        class Impostor(Group, name="rotation"):  # noqa: F841 - raising at class creation is the point
            pass
    assert group_class("rotation").__name__ == "Rotation2d"
    with pytest.raises(RegistrationError, match="non-empty string name"):
        class Nameless(Group, name=""):  # noqa: F841
            pass


def test_bad_make_group_keyword():
    with pytest.raises(ConfigError, match=r"accepted arguments: max_angle") as info:
        make_group("rotation", angle=1.0)
    assert "unexpected keyword argument 'angle'" in str(info.value)
    with pytest.raises(ConfigError, match="accepted arguments: cells, refine, strength, temperature"):
        make_group("monotone", cells=4, size=8)


@pytest.mark.parametrize("name, kwargs", [
    ("rotation", {"max_angle": -0.1}), ("rotation", {"max_angle": 4.0}), ("rotation", {"max_angle": "pi"}),
    ("cyclic", {"n": 0}), ("cyclic", {"n": 2.5}), ("cyclic", {"n": True}),
    ("scale", {"max_log_scale": -1.0}), ("scale", {"max_log_scale": 5.0}),
    ("affine", {"max_shear": -0.1}), ("affine", {"max_translation": 3.0}), ("affine", {"max_angle": 4.0}),
    ("monotone", {"cells": 0}), ("monotone", {"refine": 1.5}), ("monotone", {"strength": -1.0}),
    ("monotone", {"temperature": 0.0}), ("monotone", {"cells": True}),
])
def test_invalid_constructor_values(name, kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ConfigError, match=f"expected {key}"):
        make_group(name, **kwargs)


# ---------------------------------------------------------------------------------------------- testing toolkit
def test_toolkit_rejects_bad_arguments():
    rotation = make_group("rotation")
    with pytest.raises(ConfigError, match="expected group to be an equican.Group instance .*got str"):
        check_group_laws("rotation")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected a law name among identity, inverse"):
        run_law("commutativity", rotation)
    with pytest.raises(ConfigError, match="expected dtype float32 or float64, got torch.float16"):
        check_group_laws(rotation, dtype=torch.float16)
    with pytest.raises(ConfigError, match="expected batch to be an int >= 1, got 0"):
        check_group_laws(rotation, batch=0)
    with pytest.raises(ConfigError, match="expected size to be an int >= 8, got 4"):
        check_group_laws(rotation, size=4)
    with pytest.raises(ConfigError, match="expected seed"):
        check_group_laws(rotation, seed=-1)


def test_image_generators_reject_bad_arguments():
    generator = torch.Generator().manual_seed(0)
    raises(ConfigError, band_limited_images, 1, 0, 16, generator=generator)
    raises(ConfigError, band_limited_images, 1, 1, 1, generator=generator)
    raises(ShapeError, white_noise_images, -1, 1, 16, generator=generator)
    raises(DTypeError, band_limited_images, 1, 1, 16, generator=0)
    raises(DTypeError, white_noise_images, 1, 1, 16, generator=generator, dtype=torch.int32)
    raises(ConfigError, images, size=1)


def test_checkers_validate_their_inputs():
    rotation = make_group("rotation")
    x = image_batch()
    raises(ShapeError, assert_equivariant, lambda t: t, rotation, x[0])
    raises(ConfigError, assert_invariant, "not callable", rotation, x)
    raises(ConfigError, assert_equivariant, lambda t: t, rotation, x, atol=-1.0)
    raises(InvalidElementError, assert_equivariant, lambda t: t, make_group("cyclic"), x,
           g=torch.full((2, 1), 0.3, dtype=torch.float64))
    raises(ShapeError, assert_invariant, lambda t: t, rotation, x, g=sample(rotation, batch=3))
    raises(DTypeError, assert_invariant, lambda t: (t, t), rotation, x)
    raises(DTypeError, assert_equivariant, lambda t: t, rotation, x, generator="seed")


def test_a_long_context_never_cuts_the_received_value_off(tmp_path):
    # The value is shortened, never the message: a deep directory in the context once cut "got 5" off the end.
    from equican.latent.create import check_timm_record
    from equican.validation import short

    assert short("x" * 500).endswith("...") and len(short("x" * 500)) == 123 and short(5) == "5"
    deep = str(tmp_path / ("d" * 250) / "config.json")
    with pytest.raises(ConfigError, match=r"got 5$"):
        check_timm_record(5, {}, where=deep, field="timm")
