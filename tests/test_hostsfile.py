"""labkit.core.hostsfile: the lab's lines in a hosts file, added and removed as text."""
from __future__ import annotations

import pytest

from labkit.core.hostsfile import MARKER, lab_lines, with_lab_lines, without_lab_lines

LINES = lab_lines([("127.0.20.25", "mail.example.com"), ("127.0.30.25", "mail.isp.example.net")])


def test_lines_are_marked():
    assert LINES == [f"127.0.20.25\tmail.example.com\t{MARKER}", f"127.0.30.25\tmail.isp.example.net\t{MARKER}"]


@pytest.mark.parametrize("text", ["", "127.0.0.1 localhost\n", "127.0.0.1 localhost", "# only a comment\n\n"])
def test_apply_is_idempotent_and_remove_restores(text):
    once = with_lab_lines(text, LINES)
    assert with_lab_lines(once, LINES) == once
    assert once.splitlines()[-2:] == LINES
    restored = without_lab_lines(once)
    assert restored == (text if text.endswith("\n") or not text else text + "\n")


def test_only_marked_lines_are_touched():
    text = ("127.0.0.1 localhost\n127.0.20.25 mail.example.com  # the admin's own line\n"
            f"127.0.99.1\told.example.com\t{MARKER}\n::1 localhost\n")
    applied = with_lab_lines(text, LINES)
    assert "old.example.com" not in applied  # a stale lab line is replaced by the current ones
    assert "the admin's own line" in applied and "::1 localhost" in applied
    assert without_lab_lines(applied) == "127.0.0.1 localhost\n127.0.20.25 mail.example.com  # the admin's own line\n::1 localhost\n"
