"""One exception hierarchy for everything equican raises on bad input or failed numerics, and its warnings.

Every error derives from [`EquicanError`][equican.errors.EquicanError] and, where a standard Python exception has the
same meaning, from that too (``ShapeError`` is a ``ValueError``, ``DTypeError`` a ``TypeError``, ``UnknownNameError`` a
``LookupError``), so callers can catch either. Messages follow one pattern: where the check happened, what was expected,
what was received, e.g. ``"MonotoneScaling.act: expected g of shape (B, 2, 33, 33), got (8, 3)"``.

Warnings (a result was produced, but the caller should know how) derive from
[`EquicanWarning`][equican.errors.EquicanWarning], a ``UserWarning``, so
``warnings.simplefilter("ignore", EquicanWarning)`` silences all of them and each can be filtered on its own.
"""

from __future__ import annotations

__all__ = [
    "EquicanError",
    "ShapeError",
    "DTypeError",
    "DeviceError",
    "NonFiniteError",
    "InvalidElementError",
    "UnknownNameError",
    "RegistrationError",
    "ConvergenceError",
    "DataError",
    "CheckpointError",
    "ConfigError",
    "EquicanWarning",
    "ConvergenceWarning",
]


class EquicanError(Exception):
    """Base class of every error equican raises deliberately."""


class ShapeError(EquicanError, ValueError):
    """A tensor has the wrong rank or the wrong size along some dimension."""


class DTypeError(EquicanError, TypeError):
    """A tensor has a dtype the operation does not support (e.g. an integer image, a float16 element)."""


class DeviceError(EquicanError, ValueError):
    """Tensors that must live on one device do not."""


class NonFiniteError(EquicanError, ValueError):
    """A tensor holds NaN or infinite values where finite ones are required."""


class InvalidElementError(EquicanError, ValueError):
    """A tensor has the right shape for a group element but is not a valid element (e.g. det <= 0)."""


class UnknownNameError(EquicanError, LookupError):
    """A name (group, canonicalizer, model, ...) is not registered; the message lists the known names."""

    def __str__(self) -> str:  # LookupError would repr() the message and add quotes
        return str(self.args[0]) if self.args else ""


class RegistrationError(EquicanError, ValueError):
    """A class could not be registered, e.g. because its name is already taken."""


class ConvergenceError(EquicanError, RuntimeError):
    """An iterative solver did not reach its tolerance within its iteration budget."""


class DataError(EquicanError, OSError):
    """A data file is missing, truncated or corrupt; the message names the file and what was wrong."""


class CheckpointError(DataError):
    """Saved weights do not fit the module their saved config builds (missing or unexpected keys, other shapes); the
    message names each mismatch. A [`DataError`][equican.errors.DataError], so one handler catches both."""


class ConfigError(EquicanError, ValueError):
    """A configuration value is invalid; raised when the configuration is made, before any work starts."""


class EquicanWarning(UserWarning):
    """Base class of every warning equican issues."""


class ConvergenceWarning(EquicanWarning):
    """An iterative solver stopped at its iteration cap above its tolerance for some inputs.

    The result is still usable: the solver that warns documents what the unconverged inputs get (e.g.
    [`DEQConfig`][equican.canon.deq.DEQConfig]'s ``on_nonconvergence`` policy) and reports which ones they are. Contrast
    [`ConvergenceError`][equican.errors.ConvergenceError], raised where no usable result exists.
    """
