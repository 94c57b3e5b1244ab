"""Results that carry their reason: every check in labkit returns one, never a bare bool."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .i18n import _


@dataclass(frozen=True)
class Result:
    ok: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        status = _("ok") if self.ok else _("FAIL")
        return f"{status}: {_(self.reason)}"
