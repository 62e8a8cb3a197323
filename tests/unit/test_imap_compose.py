"""CATENATE's URL forms and limits (``protocols.imap.commands.compose``)."""

import asyncio
from types import SimpleNamespace

import pytest

from roost.protocols.imap.commands import No
from roost.protocols.imap.commands.compose import assemble, parse_url


def session(selected=None, limit=1000):
    async def run(fn, *args):
        return fn(*args)
    return SimpleNamespace(account=SimpleNamespace(id=1, address="alice@example.org"),
                           selected=selected and SimpleNamespace(name=selected),
                           ctx=SimpleNamespace(store=None, run=run, append_limit=limit))


def test_url_forms():
    s = session("Work")
    assert parse_url(s, "/INBOX;UIDVALIDITY=7/;UID=3") == ("INBOX", 7, 3, None, None)
    assert parse_url(s, "/inbox/Sub/;UID=3/;PARTIAL=10.20") == ("INBOX/Sub", None, 3, None, (10, 20))
    assert parse_url(s, "/Caf%C3%A9/;uid=3/;section=1.2.MIME") == ("Café", None, 3, ((1, 2), "MIME", None), None)
    assert parse_url(s, ";UID=9/;SECTION=TEXT") == ("Work", None, 9, ((), "TEXT", None), None)
    assert parse_url(s, "imap://alice%40example.org;AUTH=*@mail.example.org:143/Drafts/;UID=1")[:3] == \
        ("Drafts", None, 1)
    assert parse_url(s, "imap://mail.example.org/Drafts/;UID=1")[0] == "Drafts"


@pytest.mark.parametrize("url", [
    ";UID=1x", "/INBOX", "/INBOX/;UID=0", "/INBOX/;UID=1/;SECTION=1.X", "http://example.org/",
    "imap://bob%40example.org@host/INBOX/;UID=1", "imap://host", "/%FF/;UID=1",
    "/INBOX/;UID=1;URLAUTH=anonymous:internal:abc",
])
def test_bad_urls(url):
    with pytest.raises(No) as exc:
        parse_url(session("INBOX"), url)
    assert str(exc.value).startswith("[BADURL ")
    assert "]" not in str(exc.value).split("] ", 1)[0][1:]


def test_relative_url_needs_a_selected_mailbox():
    with pytest.raises(No, match=r"^\[BADURL "):
        parse_url(session(None), ";UID=1")


def test_result_is_bounded_by_appendlimit():
    assert asyncio.run(assemble(session(limit=6), [("TEXT", b"abc"), ("TEXT", b"def")])) == b"abcdef"
    with pytest.raises(No, match=r"^\[TOOBIG\]"):
        asyncio.run(assemble(session(limit=5), [("TEXT", b"abc"), ("TEXT", b"def")]))
