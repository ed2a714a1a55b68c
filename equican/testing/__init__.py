"""The testing toolkit of equican: the group laws, equivariance checkers and hypothesis strategies, for users too.

* [`check_group_laws`][equican.testing.laws.check_group_laws] measures every group law of a group (identity, inverse,
  associativity, the action laws, shapes and dtypes, randomness, the chart, optionally a gradcheck) and returns a
  [`LawReport`][equican.testing.laws.LawReport] of measured errors and tolerances.
* [`GroupContract`][equican.testing.contract.GroupContract]: subclass it in a test module
  (``class TestMyGroup(GroupContract): group = MyGroup()``) to get one hypothesis-driven pytest test per law.
* [`assert_equivariant`][equican.testing.checkers.assert_equivariant] and
  [`assert_invariant`][equican.testing.checkers.assert_invariant] check functions of images and return a
  [`LawResult`][equican.testing.laws.LawResult].
* [`equican.testing.strategies`][equican.testing.strategies]: hypothesis strategies for elements and images
  ([`elements`][equican.testing.strategies.elements], [`images`][equican.testing.strategies.images],
  [`elements_and_images`][equican.testing.strategies.elements_and_images]).
* [`band_limited_images`][equican.testing.images.band_limited_images] and
  [`white_noise_images`][equican.testing.images.white_noise_images]: the test images the tolerances are measured on.
* [`measure_law_errors`][equican.testing.laws.measure_law_errors]: the largest law errors over many seeds, to set a new
  group's ``tolerance``.
* Canonicalizer checkers ([`equican.testing.canon`][equican.testing.canon]):
  [`assert_canonicalizer_invariant`][equican.testing.canon.assert_canonicalizer_invariant],
  [`assert_g_equivariant`][equican.testing.canon.assert_g_equivariant],
  [`assert_round_trip`][equican.testing.canon.assert_round_trip] and the errors they measure.
"""

from .canon import (assert_canonicalizer_invariant, assert_g_equivariant, assert_round_trip,
                    canonicalizer_invariance_error, g_equivariance_error, round_trip_error)
from .checkers import assert_equivariant, assert_invariant
from .contract import GroupContract
from .images import NOISE_PERIOD, WINDOW_RADIUS, band_limited_images, interior, radial_window, white_noise_images
from .laws import (DEFAULT_LAWS, LAWS, VERDICT_LAWS, LawReport, LawResult, LawSetup, check_group_laws,
                   measure_law_errors, run_law)
from .strategies import batch_sizes, elements, elements_and_images, images, seeds

__all__ = [
    "DEFAULT_LAWS", "LAWS", "NOISE_PERIOD", "VERDICT_LAWS", "WINDOW_RADIUS", "GroupContract", "LawReport", "LawResult",
    "LawSetup", "assert_canonicalizer_invariant", "assert_equivariant", "assert_g_equivariant", "assert_invariant",
    "assert_round_trip", "band_limited_images", "batch_sizes", "canonicalizer_invariance_error", "check_group_laws",
    "elements", "elements_and_images", "g_equivariance_error", "images", "interior", "measure_law_errors",
    "radial_window", "round_trip_error", "run_law", "seeds", "white_noise_images",
]
