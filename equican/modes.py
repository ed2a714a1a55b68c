"""Module modes: evaluate a network without leaving its submodules' training flags changed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["evaluating", "training"]


@contextlib.contextmanager
def _in_mode(model: object, train: bool) -> Iterator[None]:
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        # Through each module's own train() call, parents first (the order of modules()), so that every module ends
        # in its own mode and modules that rebuild state on a switch (escnn's cached filters) see it.
        for m, was in flags:
            m.train(was)


def evaluating(model: object) -> contextlib.AbstractContextManager[None]:
    """Put an ``nn.Module`` and every submodule in eval mode (no BatchNorm statistics update, no dropout, a DEQ's
    evaluation solver) for the block, then restore each one's own training flag: ``model.train(was)`` would not,
    when submodules were in a mode of their own. Anything that is not a module passes through untouched."""
    return _in_mode(model, False)


def training(model: object) -> contextlib.AbstractContextManager[None]:
    """Put an ``nn.Module`` and every submodule in training mode for the block (e.g. to read a state that some
    modules only hold in one mode), then restore each one's own flag, as
    [`evaluating`][equican.modes.evaluating] does."""
    return _in_mode(model, True)
