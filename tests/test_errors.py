"""Every error edgetune raises on purpose is a class of the one tree in agent.errors."""

from __future__ import annotations

import importlib
import pkgutil

import agent
from agent import errors


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_edgetune_error_lives_in_the_errors_module() -> None:
    for module in pkgutil.walk_packages(agent.__path__, "agent."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional extra (train, fleet) that is not installed
            continue
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in _subclasses(errors.EdgetuneError)
                     if c.__module__ != errors.__name__)
    assert outside == []
    named = set(errors.__all__)
    assert {c.__name__ for c in _subclasses(errors.EdgetuneError)} | {"EdgetuneError"} == named
    for name in named:
        assert name in (errors.__doc__ or ""), f"{name} is not drawn in the tree of agent.errors"
