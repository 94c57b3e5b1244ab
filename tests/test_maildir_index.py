"""Maildir operations cost what they touch: a delivery never lists the folder, a listing reads
only the messages that are new since the last one, and a wait wakes at the delivery."""
from __future__ import annotations

import os
import threading
import time

import pytest

from labkit.net.mailbox import maildir

MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
           b" folded\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHi Bob\r\n")


@pytest.fixture
def forget():
    """Forget what this process has read of every folder, as another process would."""
    def clear() -> None:
        maildir._folders.clear()
    clear()
    yield clear
    clear()


def test_delivery_never_lists_the_folder(tmp_path, monkeypatch, forget):
    folder = tmp_path / "box"
    maildir.deliver_to_folder(folder, MESSAGE)
    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": listed.append(p) or real(p))
    for _ in range(20):
        key, path = maildir.deliver_to_folder(folder, MESSAGE)
        assert path == folder / "new" / key and path.read_bytes() == MESSAGE.replace(b"\r\n", b"\n")
    assert listed == []


def test_headers_are_indexed_at_delivery(tmp_path, forget):
    folder = tmp_path / "box"
    key, _ = maildir.deliver_to_folder(folder, MESSAGE)
    [info] = maildir.list_folder(folder)
    assert (info.key, info.sender, info.subject, info.message_id) == (
        key, "Alice <alice@example.com>", "Grüße folded", "<1@example.com>")
    assert maildir.INDEX in os.listdir(folder)


def test_a_listing_reads_only_new_messages(tmp_path, monkeypatch, forget):
    folder = tmp_path / "box"
    for _ in range(5):
        maildir.deliver_to_folder(folder, MESSAGE)
    os.unlink(folder / maildir.INDEX)  # as if another program had delivered them
    opened = []
    real = maildir._entry
    monkeypatch.setattr(maildir, "_entry", lambda *a: opened.append(a[0]) or real(*a))
    assert len(maildir.list_folder(folder)) == 5 and len(opened) == 5
    forget()  # another process: it reads the index the first listing wrote
    assert len(maildir.list_folder(folder)) == 5 and len(opened) == 5
    maildir.deliver_to_folder(folder, MESSAGE)  # indexed by the delivery itself
    assert len(maildir.list_folder(folder)) == 6 and len(opened) == 6


def test_a_listing_follows_renames_and_deletions(tmp_path, forget):
    folder = tmp_path / "box"
    keys = [maildir.deliver_to_folder(folder, MESSAGE)[0] for _ in range(3)]
    time.sleep(0.06)
    assert [i.key for i in maildir.list_folder(folder)] == keys
    os.rename(folder / "new" / keys[0], folder / "cur" / f"{keys[0]}:2,S")
    os.unlink(folder / "new" / keys[1])
    infos = maildir.list_folder(folder)
    assert [i.key for i in infos] == [keys[0], keys[2]]
    assert infos[0].path == folder / "cur" / f"{keys[0]}:2,S"


def test_a_damaged_index_line_is_read_again_from_the_file(tmp_path, forget):
    folder = tmp_path / "box"
    maildir.deliver_to_folder(folder, MESSAGE)
    with open(folder / maildir.INDEX, "ab") as f:
        f.write(b'{"key": "broken\n')
    forget()
    [info] = maildir.list_folder(folder)
    assert info.subject == "Grüße folded"


def test_a_wait_wakes_at_the_delivery(tmp_path):
    folder = tmp_path / "box"
    since = maildir.deliveries()
    threading.Timer(0.05, maildir.deliver_to_folder, (folder, MESSAGE)).start()
    t = time.monotonic()
    assert maildir.wait_for_delivery(since, 5)
    assert time.monotonic() - t < 2
    assert not maildir.wait_for_delivery(maildir.deliveries(), 0.01)
