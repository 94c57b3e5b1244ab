"""Exercise checkers: each chapter's exercises are answered in the notebook and checked here.

    from labkit.teach.exercises import check
    check("00.1", lab, answer=12345)     # -> Result(ok, reason)

A checker looks at what the lab measured (ports, mailboxes, events), never at printed text.
It returns a :class:`labkit.result.Result` whose reason says what was right or what to look
at. Each chapter's checkers live in ``chNN.py`` and register themselves with ``@exercise``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Callable

from ...errors import ConfigError, NotFound
from ...result import Result

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ...lab.lab import Lab

_CHECKS: dict[str, Callable[..., Result]] = {}


def exercise(key: str):
    """Register a checker for exercise ``key`` ("CHAPTER.N")."""
    def register(fn: Callable[..., Result]) -> Callable[..., Result]:
        if key in _CHECKS and _CHECKS[key] is not fn:
            raise ConfigError("exercise", f"{key} is registered twice")
        _CHECKS[key] = fn
        return fn
    return register


def arrived(lab: Lab, address: str, subject: str, timeout: float) -> list[dict[str, Any]]:
    """The messages with ``subject`` in ``address``'s mailbox, waiting up to ``timeout`` seconds
    for the first; none (not an exception) if it does not come: a checker then says why."""
    try:
        return lab.wait_for_mail(address, subject=subject, timeout=timeout)
    except TimeoutError:
        return []


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{info.name}")


def keys() -> list[str]:
    """Every exercise key, in order."""
    _load_all()
    return sorted(_CHECKS)


def check(key: str, lab: Lab | None = None, **answer: Any) -> Result:
    """Check the answer to exercise ``key`` ("CHAPTER.N"), against the running ``lab`` if it needs one."""
    _load_all()
    if key not in _CHECKS:
        raise NotFound(f"no exercise {key!r}; exercises are {', '.join(sorted(_CHECKS))}")
    return _CHECKS[key](lab, **answer)


def __getattr__(name: str) -> Any:
    """A chapter's checkers and data as ``exercises.ch12`` (loaded on first use)."""
    if name.startswith("ch") and name[2:].isdigit():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
