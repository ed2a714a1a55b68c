"""Tutorial 3: property-test your own canonicalizer with ``equican.testing``.

Writes a small canonicalizer for C4 (rotations by multiples of 90°) as a subclass of ``equican.Canonicalizer``,
tests it with the library's hypothesis strategies and checkers, and shows the same tests catching a broken variant.
The file is both a script and a pytest module; every claim of docs/tutorials/test_canonicalizer.md is asserted here.

Run:  python docs/tutorials/test_canonicalizer.py         (a few seconds on one CPU thread, offline)
 or:  pytest docs/tutorials/test_canonicalizer.py         (the test functions alone)
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, given, settings

from equican import Canonicalizer, make_group
from equican.data import load_mnist
from equican.testing import (assert_canonicalizer_invariant, assert_g_equivariant, assert_round_trip,
                             white_noise_images)
from equican.testing import strategies as eqst

C4 = make_group("cyclic", n=4)  # exact on square images: rot90 moves pixels without interpolation


# ---------------------------------------------------------------------------------------------- the canonicalizer
class HeaviestQuadrant(Canonicalizer):
    """Turns each image so that its heaviest quadrant (largest sum of pixel values) ends up top-left.

    A canonicalizer writes ``solve(x) -> (z, info)``, with ``z`` in the group's chart. For C4 the chart is one score
    per rotation, ``(B, 4)``, and the chart parametrizes the *canonicalizing* element ``h = g⁻¹``: the base class
    turns the scores into ``h`` (the arg-max), the canonical input ``act(h, x)`` and ``g = inverse(h)``.
    """

    def __init__(self) -> None:
        super().__init__(C4)

    def rotations(self, dtype: torch.dtype) -> torch.Tensor:
        """The 4 elements, ``(4, 1)``, in chart order: ``from_unconstrained`` of the one-hot scores."""
        return self.group.from_unconstrained(torch.eye(4, dtype=dtype))

    @staticmethod
    def top_left_mass(y: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B,)``: the sum of the top-left quadrant."""
        return y[..., : y.shape[-2] // 2, : y.shape[-1] // 2].sum(dim=(1, 2, 3))

    def solve(self, x):
        # Score every candidate h by the image it would produce. The scores of act(k, x) are those of x, permuted,
        # so their arg-max picks the same canonical image: invariant by construction (ties aside).
        scores = [self.top_left_mass(self.group.act(h.expand(len(x), 1), x)) for h in self.rotations(x.dtype)]
        return torch.stack(scores, dim=1), {}


class Backwards(HeaviestQuadrant):
    """The classic slip: scores the candidates as if the chart held ``g`` (the rotation the input is in), not the
    ``h = g⁻¹`` that undoes it; so the image is turned the wrong way whenever ``g`` is a quarter turn."""

    def solve(self, x):
        hs = self.rotations(x.dtype)
        scores = [self.top_left_mass(self.group.act(self.group.inverse(h[None]).expand(len(x), 1), x)) for h in hs]
        return torch.stack(scores, dim=1), {}


# ---------------------------------------------------------------------------------------------- the tests
# Deterministic and quick for the tutorial (no "explain" phase: it reruns a failure many times); in your own suite
# a hypothesis profile usually sets these (see tests/conftest.py).
FAST = settings(max_examples=25, deadline=None, database=None, derandomize=True, phases=set(Phase) - {Phase.explain})
CANONICALIZERS = pytest.mark.parametrize("canon", [HeaviestQuadrant()], ids=["heaviest_quadrant"])


@CANONICALIZERS
@FAST
@given(pair=eqst.elements_and_images(C4, size=16))  # k, and white noise: C4 is exact, so any image must work
def test_canonical_input_is_invariant(canon, pair):
    k, x = pair
    torch.testing.assert_close(canon(C4.act(k, x)).x, canon(x).x, rtol=0, atol=0)  # exactly equal


@CANONICALIZERS
@FAST
@given(x=eqst.images(size=16, band_limited=False), seed=eqst.seeds())
def test_library_checkers(canon, x, seed):
    tol = canon.group.tolerance(x.dtype)  # for exact C4: action 0, element 2 eps
    assert_canonicalizer_invariant(canon, x, atol=tol.action, seed=seed)  # the checkers draw k from `seed`
    assert_g_equivariant(canon, x, atol=tol.element, seed=seed)
    assert_round_trip(canon, x, atol=tol.action)


def test_the_checkers_catch_a_backwards_canonicalizer():
    """The negative control: a checker that cannot fail proves nothing."""
    for test in (test_canonical_input_is_invariant, test_library_checkers):
        with pytest.raises(AssertionError) as failure:
            test(canon=Backwards())
        print(f"{test.__name__} caught Backwards: {str(failure.value).splitlines()[0]}")
        print(*getattr(failure.value, "__notes__", []), sep="\n")  # hypothesis's minimal failing example
    # act(g, canonical input) == x holds even for Backwards (g = h⁻¹ whatever h is): round trip alone cannot tell.
    assert_round_trip(Backwards(), white_noise_images(4, 1, 16, generator=torch.Generator().manual_seed(0)), atol=0)


# ---------------------------------------------------------------------------------------------- as a script
if __name__ == "__main__":
    canon = HeaviestQuadrant()
    test_canonical_input_is_invariant(canon=canon)  # hypothesis-decorated tests can be called directly
    test_library_checkers(canon=canon)
    print("HeaviestQuadrant passed both tests (25 hypothesis examples each)\n")
    test_the_checkers_catch_a_backwards_canonicalizer()

    # On real digits: every quarter turn of a digit has the very same canonical form.
    images, labels = load_mnist("test", limit=8)
    x = images[:, None].to(torch.float64) / 255
    res = canon(x)
    for quarter in range(4):
        k = C4.from_unconstrained(torch.eye(4, dtype=x.dtype)[[quarter] * len(x)])
        assert torch.equal(canon(C4.act(k, x)).x, res.x)
    masses = torch.stack([canon.top_left_mass(torch.rot90(res.x, r, (-2, -1))) for r in range(4)], dim=1)
    assert bool((masses.argmax(dim=1) == 0).all())  # each canonical digit's heaviest quadrant is its top-left one
    turns = torch.round(res.g[:, 0] / (torch.pi / 2)).long().tolist()
    print(f"digits {labels.tolist()}: g in quarter turns {turns}; all 4 rotations of each give the same canonical form")
