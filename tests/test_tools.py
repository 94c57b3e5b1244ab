"""labkit.real.tools: a missing tool is a one-line reason, or an error where real mode is required."""
from __future__ import annotations

import pytest

from labkit import RealModeUnavailable, tools


def test_missing_tool_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.delenv("LABKIT_REQUIRE_REAL", raising=False)
    out = tools.run(["no-such-tool-here", "--version"])
    assert not out.ran and not out.ok
    assert "not installed" in out.reason and "install-system-packages" in out.reason


def test_missing_tool_fails_where_real_mode_is_required(monkeypatch):
    monkeypatch.setenv("LABKIT_REQUIRE_REAL", "1")
    with pytest.raises(RealModeUnavailable, match="no-such-tool-here"):
        tools.run(["no-such-tool-here"])


def test_exit_status_is_in_the_result():
    out = tools.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert out.ran and out.returncode == 3 and not out.ok
    assert out.stdout == "out\n" and out.stderr == "err\n"
