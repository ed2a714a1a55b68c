"""Module modes: evaluate a network without leaving its submodules' training flags changed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextlib.contextmanager
def evaluating(model: object) -> Iterator[None]:
    """Put an ``nn.Module`` and every submodule in eval mode (no BatchNorm statistics update, no dropout, a DEQ's
    evaluation solver) for the block, then restore each one's own training flag: ``model.train(was)`` would not,
    when submodules were in a mode of their own. Anything that is not a module passes through untouched."""
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training
