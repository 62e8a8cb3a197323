"""``roost deliver`` as Postfix's ``mailbox_command`` sees it: a process that
reads the message on stdin and exits 0 (delivered), 67 (no such user) or
75 (try again later)."""

import os
import shutil

import pytest

from tests.conftest import add_user, roost, stored_messages

MESSAGE = b"From: x@example.net\nSubject: via deliver\nMessage-ID: <d1@example.net>\n\nhello\n"


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    add_user(d, "a@example.org")
    return d


def deliver(data, *args, input=MESSAGE):
    return roost(data, "deliver", *args, input=input, check=False)


def test_delivered_exit_0(data):
    proc = deliver(data, "a@example.org", "--sender", "x@example.net")
    assert proc.returncode == 0, proc.stderr
    assert stored_messages(data, "a@example.org") == [
        b"Return-Path: <x@example.net>\nDelivered-To: a@example.org\n" + MESSAGE]


def test_unknown_user_exit_67(data):
    proc = deliver(data, "nobody@example.org")
    assert proc.returncode == 67
    assert b"no such user" in proc.stderr


def test_mailbox_option_and_fallback(data):
    assert deliver(data, "a@example.org", "--mailbox", "Junk").returncode == 0
    assert deliver(data, "a@example.org", "--mailbox", "No/Such").returncode == 0
    assert len(stored_messages(data, "a@example.org", "Junk")) == 1
    assert len(stored_messages(data, "a@example.org")) == 1


def test_over_quota_exit_75(tmp_path):
    d = tmp_path / "data"
    add_user(d, "small@example.org", quota=len(MESSAGE) * 2)
    assert deliver(d, "small@example.org").returncode == 0
    assert deliver(d, "small@example.org").returncode == 0   # the same again: a duplicate
    proc = deliver(d, "small@example.org", input=MESSAGE.replace(b"<d1@", b"<d2@"))
    assert proc.returncode == 75
    assert len(stored_messages(d, "small@example.org")) == 1


def test_storage_failure_exit_75_and_nothing_stored(data):
    # The account's Maildir tmp/ cannot be written: retry later, store nothing.
    tmp = data / "mail" / "example.org" / "a" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"not a directory")
    proc = deliver(data, "a@example.org")
    assert proc.returncode == 75
    os.unlink(tmp)
    tmp.mkdir()
    assert stored_messages(data, "a@example.org") == []
    assert deliver(data, "a@example.org").returncode == 0
    assert len(stored_messages(data, "a@example.org")) == 1


def test_too_large_is_permanent(tmp_path):
    d = tmp_path / "data"
    add_user(d, "a@example.org")
    config = tmp_path / "roost.toml"
    config.write_text("[limits]\nmax_message_size = 100\n")
    proc = roost(d, "--config", config, "deliver", "a@example.org", input=MESSAGE + b"x" * 200,
                 check=False)
    assert proc.returncode not in (0, 75)   # the MTA must bounce, not retry
    assert stored_messages(d, "a@example.org") == []
