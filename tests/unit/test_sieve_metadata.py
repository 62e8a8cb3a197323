"""Sieve mboxmetadata and servermetadata (RFC 5490) over the IMAP METADATA
store: the RFC's examples through the interpreter with hand-made hooks, name
checks at compile time, and a real delivery reading entries a client set."""

import pytest

from roost.storage import delivery as dl
from roost.storage.sieve import EXTENSIONS, SieveError, compile, run
from roost.storage.sieve import scripts
from roost.storage.sieve.actions import Context, FileInto, Hooks
from roost.storage.store import Store

MSG = b"From: boss@example.com\r\nTo: u@example.org\r\nSubject: now\r\n\r\nbody\r\n"


class MetaHooks(Hooks):
    def __init__(self, entries):
        self.entries, self.asked = entries, []

    def metadata(self, mailbox, name):
        self.asked.append((mailbox, name))
        return self.entries.get((mailbox, name))


def go(script, entries):
    hooks = MetaHooks(entries)
    return run(compile(script), Context(data=MSG, hooks=hooks)), hooks


def test_listed():
    assert "mboxmetadata" in EXTENSIONS and "servermetadata" in EXTENSIONS


def test_metadata_rfc5490_example():
    # RFC 5490 section 3.3's example, on the INBOX's /private/vendor/... entry.
    script = ('require ["mboxmetadata", "fileinto"];\n'
              'if metadata :is "INBOX" "/private/vendor/vendor.isode/auto-replies" "on" {\n'
              '    fileinto "Replied";\n}')
    name = "/private/vendor/vendor.isode/auto-replies"
    out, hooks = go(script, {("INBOX", name): b"on"})
    assert out.actions == [FileInto("Replied")] and hooks.asked == [("INBOX", name)]
    out, _ = go(script, {("INBOX", name): b"off"})
    assert out.actions == [] and out.keep
    out, _ = go(script, {})                          # no entry: false
    assert out.actions == [] and out.keep
    # Entry names are case-insensitive: the store is asked in lower case.
    out, hooks = go(script.replace("/private/vendor", "/PRIVATE/Vendor"), {("INBOX", name): b"on"})
    assert out.actions == [FileInto("Replied")]


def test_match_types_and_exists():
    entries = {("INBOX", "/shared/comment"): "Größe 12".encode(), (None, "/private/mode"): b"away"}
    out, _ = go('require ["mboxmetadata", "fileinto"];\n'
                'if metadata :matches "INBOX" "/shared/comment" "Gr*" { fileinto "A"; }', entries)
    assert out.actions == [FileInto("A")]
    out, _ = go('require ["mboxmetadata", "fileinto"];\n'
                'if metadataexists "INBOX" ["/shared/comment", "/private/none"] { fileinto "B"; }',
                entries)
    assert out.actions == []
    out, _ = go('require ["mboxmetadata", "fileinto"];\n'
                'if metadataexists "INBOX" "/shared/comment" { fileinto "B"; }', entries)
    assert out.actions == [FileInto("B")]
    out, _ = go('require ["servermetadata", "fileinto"];\n'
                'if servermetadata :contains "/private/mode" "AWA" { fileinto "C"; }', entries)
    assert out.actions == [FileInto("C")]
    out, _ = go('require ["servermetadata", "fileinto"];\n'
                'if servermetadataexists ["/private/mode", "/private/other"] { fileinto "D"; }',
                entries)
    assert out.actions == []
    out, _ = go('require ["servermetadata", "fileinto", "variables"];\nset "e" "/private/mode";\n'
                'if servermetadata :is "${e}" "away" { fileinto "E"; }', entries)
    assert out.actions == [FileInto("E")]


@pytest.mark.parametrize("script", [
    'if metadata "INBOX" "/private/x" "y" { keep; }',                        # no require
    'require "mboxmetadata";\nif metadata "INBOX" "private/x" "y" { keep; }',
    'require "mboxmetadata";\nif metadata "INBOX" "/private/a*" "y" { keep; }',
    'require "mboxmetadata";\nif metadataexists "INBOX" ["/shared/ok", "/other"] { keep; }',
    'require "servermetadata";\nif servermetadata "/private/" "y" { keep; }',
    'require "servermetadata";\nif servermetadata "INBOX" "/private/x" "y" { keep; }',   # too many
    'require "mboxmetadata";\nif servermetadataexists "/private/x" { keep; }',
])
def test_compile_errors(script):
    with pytest.raises(SieveError):
        compile(script)


def test_delivery_reads_the_store(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    d = dl.Delivery(store, hostname="mx.example.org")
    try:
        acct = store.add_account("u@example.org")
        inbox = store.mailbox(acct.id, "INBOX")
        store.create_mailbox(acct.id, "Boss")
        scripts.put_script(store, acct.id, "main", (
            'require ["mboxmetadata", "servermetadata", "fileinto"];\r\n'
            'if allof (metadata "INBOX" "/private/vendor/roost/boss" "on",\r\n'
            '          servermetadataexists "/private/vendor/roost/filters") {\r\n'
            '    fileinto "Boss";\r\n}\r\n'), activate=True)
        d.sieve.forget()
        (res,) = d.store(dl.Incoming(MSG, ("u@example.org",), sender="boss@example.com"))
        assert res.stored_or_raise().mailbox_id == inbox.id
        store.set_metadata(acct.id, inbox.id, [("/private/vendor/roost/boss", b"on")])
        store.set_metadata(acct.id, None, [("/private/vendor/roost/filters", b"1")])
        (res,) = d.store(dl.Incoming(MSG, ("u@example.org",), sender="boss@example.com"))
        assert res.stored_or_raise().mailbox_id == store.mailbox(acct.id, "Boss").id
    finally:
        d.close()
        store.close()
