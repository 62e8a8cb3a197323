"""Search: every criteria node over corpus messages, one suite for every backend.

Backends: FTS5 (SQLite), Whoosh with nothing indexed yet (answers come from
the scan of queued documents), Whoosh after its queue is applied (answers
come from the index), and Whoosh on PostgreSQL (skipped, with the reason,
when PostgreSQL is not reachable at ``ROOST_TEST_PG``).
"""

import pathlib

import pytest

from roost.storage import search as S
from roost.storage.delivery import Delivery
from roost.storage.store import Store
from tests.conftest import append, pg_store

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
DAY = 86400.0
BASE = 1_700_000_000.0

# key: (corpus path, flags). Comments say what each one brings.
MESSAGES = {
    # ISO-2022-JP encoded-word subject and body: 日本語メールテスト / 日本語が 正常に 送れているか
    "ja": ("mimekit/messages/japanese.eml", ("\\Seen",)),
    # raw UTF-8 Russian subject and body: Откуда он появился?
    "ru": ("mimekit/compliance/raw-utf8-header.eml", ("\\Flagged", "$Work")),
    # ISO-8859-1 Q-encoded subject "Eelanalüüsi päring", a JPEG attachment of that name
    "ee": ("mail-rb/attachment_emails/attachment_with_quoted_filename.eml", ()),
    # multipart/alternative: plain "Plain text email goes here!", HTML "This is the HTML Section!"
    "alt": ("stalwart-mail-parser/rfc/006.eml", ("\\Seen", "\\Answered")),
    # German multipart/alternative: plain "Search for hähä", HTML "Search for höhö"
    "de": ("stalwart-mail-parser/thirdparty/017.eml", ("$work",)),
    # raw UTF-8 headers: "Jöhn Doe" <jdöe@mächine.example>, Subject: Säying Hello; no Date
    "utf8": ("mail-rb/rfc6532/utf8_headers.eml", ()),
    # EUC-KR encoded-word subject "NOTE: 한국말로 하는 것", base64 body
    "ko": ("mail-rb/plain_emails/raw_email.eml", ("\\Deleted",)),
}
KEYS = list(MESSAGES)


class Mail:
    """An account with the corpus messages in INBOX (and "ja" also in Archive)."""

    def __init__(self, store, backend):
        self.store, self.backend = store, backend
        self.delivery = Delivery(store)
        self.account = store.add_account("alice@example.org")
        self.inbox = store.mailbox(self.account.id, "INBOX")
        self.archive = store.mailbox(self.account.id, "Archive")
        self.data, self.uid, self.pk = {}, {}, {}
        for i, key in enumerate(KEYS):
            path, flags = MESSAGES[key]
            data = (CORPUS / path).read_bytes()
            stored = append(self.delivery, self.account, self.inbox, data, flags=flags,
                                          internal_date=BASE + i * DAY)
            self.data[key], self.uid[key], self.pk[key] = data, stored.uid, stored.message_id
        store.copy(self.inbox.id, [self.uid["ja"]], self.archive.id)
        self.settle()

    def settle(self):
        if self.backend == "whoosh":
            self.store.fulltext.flush()

    def find(self, node):
        """Keys matched in INBOX; also checks the account-wide answer agrees."""
        uids = S.search(self.store, self.account.id, node, self.inbox.id)
        assert uids == sorted(uids)
        by_uid = {v: k for k, v in self.uid.items()}
        found = {by_uid[u] for u in uids}
        if not _mailbox_only(node):
            pks = S.search(self.store, self.account.id, node)
            by_pk = {v: k for k, v in self.pk.items()}
            assert pks == sorted(pks)
            assert {by_pk[p] for p in pks} == found
        return found

    def close(self):
        self.delivery.close()


def _mailbox_only(node):
    if isinstance(node, (S.Uids, S.ModSeq, S.Flag)) or \
            (isinstance(node, S.Date) and node.field == "saved"):
        return True
    if isinstance(node, (S.And, S.Or)):
        return any(_mailbox_only(i) for i in node.items)
    if isinstance(node, S.Not):
        return _mailbox_only(node.item)
    return False


BACKENDS = ["fts5", "whoosh-queued", "whoosh", "whoosh-postgresql"]


def _mail(kind, tmp_path):
    cleanup = None
    if kind == "fts5":
        store = Store.memory()
    elif kind == "whoosh-queued":
        store = Store.memory(search="whoosh")
        store.fulltext.delay = 3600          # the indexer never gets to run
    elif kind == "whoosh":
        store = Store.open(str(tmp_path / "data"), search="whoosh")
    else:
        store, cleanup = pg_store(tmp_path, "roost_s_", search_dir=str(tmp_path / "search"))
    m = Mail(store, "whoosh" if kind in ("whoosh", "whoosh-postgresql") else kind)
    m.cleanup = cleanup or store.close
    return m


@pytest.fixture(scope="module", params=BACKENDS)
def shared_mail(request, tmp_path_factory):
    """For tests that only search: built once per backend."""
    m = _mail(request.param, tmp_path_factory.mktemp("search"))
    yield m
    m.close()
    m.cleanup()


@pytest.fixture(params=BACKENDS)
def mail(request, tmp_path):
    m = _mail(request.param, tmp_path)
    yield m
    m.close()
    m.cleanup()


T = S.Text

TEXT_CASES = [
    # Header keys: case- and diacritic-insensitive substrings of the decoded value.
    (T("subject", "日本語"), {"ja"}),
    (T("subject", "テスト"), {"ja"}),                    # inside a run, not at a word start
    (T("subject", "testing japanese"), {"ja"}),
    (T("subject", "ОТКУДА"), {"ru"}),                     # Cyrillic case folding
    (T("subject", "появился?"), {"ru"}),
    (T("subject", "eelanaluusi"), {"ee"}),                # Q-encoded ISO-8859-1, diacritics folded
    (T("subject", "lanalüü"), {"ee"}),                    # mid-word substring
    (T("subject", "SAYING"), {"utf8"}),
    (T("subject", "한국말"), {"ko"}),                      # EUC-KR encoded word
    (T("subject", "no such subject"), set()),
    (T("subject", ""), set(KEYS)),                        # empty string matches every message
    (T("subject", "He"), {"utf8"}),                       # short values: no trigram, same answer
    (T("subject", "日本"), {"ja"}),
    (T("from", "Atsushi"), {"ja"}),
    (T("from", "37signals.com"), {"ee", "ko"}),
    (T("from", "jdoe"), {"utf8"}),                        # jdöe folded
    (T("from", "@mächine"), {"utf8"}),
    (T("to", "recipient@"), {"alt"}),
    (T("to", "märy smith"), {"utf8"}),
    (T("cc", "example"), set()),
    (T("bcc", "a"), set()),
    (T("header:message-id", "veritas-vos"), {"ja"}),
    (T("header:X-Mailer", "outlook"), {"ru"}),
    (T("header:x-mailer", ""), {"ru", "ee"}),             # present at all
    (T("header:user-agent", "thunderbird"), {"ja", "de"}),
    (T("header:user-agent", "outlook"), set()),           # only in another header
    (T("header:subject", "hello"), {"utf8"}),
    # BODY: words and word prefixes, folded; not mid-word.
    (T("body", "fallback"), {"alt"}),
    (T("body", "FALLBACK if"), {"alt"}),
    (T("body", "fallb"), {"alt"}),                        # prefix
    (T("body", "allback"), set()),                        # not a word start
    (T("body", "HTML section"), {"alt"}),                 # the text/html alternative
    (T("body", "plain text"), {"alt"}),                   # the text/plain alternative
    (T("body", "hähä"), {"de"}),
    (T("body", "haha"), {"de"}),                          # diacritics folded
    (T("body", "höhö"), {"de"}),                          # only in the HTML alternative
    (T("body", "kigaaldcbanejcbi"), {"de"}),              # attachment file name
    (T("body", "Eelanalüüsi"), {"ee"}),                   # attachment file name
    (T("body", "появился"), {"ru"}),
    (T("body", "ОТКУДА"), {"ru"}),
    (T("body", "正常"), {"ja"}),                          # CJK inside a run
    (T("body", "送れている"), {"ja"}),
    (T("body", "正常送れ"), set()),                       # not contiguous in the text
    (T("body", "日本語メール"), set()),                   # subject only
    (T("body", "atsushi"), set()),                        # header only
    (T("body", ""), set(KEYS)),
    (T("body", "?!"), set()),                             # no words at all
    # TEXT: headers and body.
    (T("text", "日本語メール"), {"ja"}),
    (T("text", "atsushi"), {"ja"}),
    (T("text", "x-mailer"), {"ru", "ee"}),                # header names are text too
    (T("text", "fallback multipart"), {"alt"}),           # one word in the body, one in a header
    (T("text", "hello"), {"utf8"}),
    (T("text", "nonexistentword"), set()),
]


@pytest.mark.parametrize("node, expected", TEXT_CASES, ids=[f"{n.field}:{n.value}" for n, _e in TEXT_CASES])
def test_text(shared_mail, node, expected):
    m = shared_mail
    assert m.find(node) == expected


def test_metadata_nodes(shared_mail):
    m = shared_mail
    f = m.find
    assert f(S.All()) == set(KEYS)
    assert f(S.Flag("\\Seen")) == {"ja", "alt"}
    assert f(S.Flag("\\seen")) == {"ja", "alt"}
    assert f(S.Not(S.Flag("\\Seen"))) == set(KEYS) - {"ja", "alt"}
    assert f(S.Flag("\\Deleted")) == {"ko"}
    assert f(S.Flag("$WORK")) == {"ru", "de"}               # keywords compare case-insensitively
    assert f(S.Flag("$Wor")) == set()
    assert f(S.Flag("\\Recent")) == set()
    uids = sorted(m.uid.values())
    assert f(S.Uids(((uids[1], uids[2]),))) == {KEYS[1], KEYS[2]}
    assert f(S.Uids(((uids[0], uids[0]), (uids[-1], uids[-1] + 100)))) == {KEYS[0], KEYS[-1]}
    assert f(S.Uids(())) == set()
    assert f(S.Date("internal", since=BASE + 2 * DAY)) == set(KEYS[2:])
    assert f(S.Date("internal", since=BASE + DAY, before=BASE + 3 * DAY)) == set(KEYS[1:3])
    # Date: header; "alt" and "utf8" have none, so their internal dates stand in.
    assert f(S.Date("sent", before=1_400_000_000)) == {"ru", "ee", "ko"}
    assert f(S.Date("sent", since=BASE)) == {"alt", "utf8"}
    assert f(S.Date("saved", since=0)) == set(KEYS)
    sizes = {k: len(v) for k, v in m.data.items()}
    mid = sorted(sizes.values())[3]
    assert f(S.Size(larger=mid)) == {k for k, s in sizes.items() if s > mid}
    assert f(S.Size(smaller=mid)) == {k for k, s in sizes.items() if s < mid}
    assert f(S.Size(larger=mid - 1, smaller=mid + 1)) == {k for k, s in sizes.items() if s == mid}
    assert f(S.InMailbox((m.archive.id,))) == {"ja"}
    assert f(S.HasAttachment()) == {"ee", "de"}
    assert f(S.HasAttachment(False)) == set(KEYS) - {"ee", "de"}
    records = {r.uid: r for r in m.store.records(m.inbox.id)}
    ja = records[m.uid["ja"]]
    assert f(S.Thread(ja.thread_id)) == {"ja"}
    top = max(r.modseq for r in records.values())
    assert f(S.ModSeq(top)) == {k for k in KEYS if records[m.uid[k]].modseq >= top}
    assert f(S.ModSeq(0)) == set(KEYS)


def test_boolean_combinations(shared_mail):
    m = shared_mail
    f = m.find
    assert f(S.And((T("body", "search"), S.Not(T("body", "höhö"))))) == set()
    assert f(S.Or((T("subject", "日本"), T("body", "появился"), S.Flag("\\Deleted")))) == {"ja", "ru", "ko"}
    assert f(S.And((S.Flag("\\Seen"), T("text", "html")))) == {"alt"}
    assert f(S.Not(S.Or((T("from", "37signals"), S.Flag("\\Seen"))))) == {"ru", "de", "utf8"}
    assert f(S.And(())) == set(KEYS)
    assert f(S.Or(())) == set()
    assert f(S.Not(T("body", ""))) == set()
    assert f(S.And((T("body", "fallback"), T("body", "plain"), T("text", "multipart")))) == {"alt"}
    assert f(S.And((T("body", "fallback"), T("body", "höhö")))) == set()
    assert f(S.And((T("body", "?!"), T("body", "fallback")))) == set()
    assert f(S.And((T("body", "正常"), T("body", "テスト")))) == {"ja"}


def test_account_wide_per_mailbox_nodes(shared_mail):
    """Without a mailbox, per-mailbox nodes match a message in any of its mailboxes."""
    m = shared_mail
    acct = m.account.id
    assert S.search(m.store, acct, S.Flag("\\Seen")) == sorted([m.pk["ja"], m.pk["alt"]])
    assert S.search(m.store, acct, S.InMailbox((m.archive.id,))) == [m.pk["ja"]]
    with pytest.raises(ValueError):
        S.search(m.store, acct, S.Uids(((1, 5),)))
    with pytest.raises(ValueError):
        S.search(m.store, acct, T("nonsense", "x"))
    assert S.search(m.store, acct, S.InMailbox((m.archive.id,)), m.archive.id) == [1]


def test_other_accounts_stay_invisible(mail):
    bob = mail.store.add_account("bob@example.org")
    bob_box = mail.store.mailbox(bob.id, "INBOX")
    append(mail.delivery, bob, bob_box, mail.data["alt"])
    mail.settle()
    assert S.search(mail.store, bob.id, T("body", "fallback")) != [mail.pk["alt"]]
    assert len(S.search(mail.store, bob.id, T("body", "fallback"))) == 1
    assert S.search(mail.store, bob.id, T("body", "fallback"), mail.inbox.id) == []
    assert mail.find(T("body", "fallback")) == {"alt"}


def test_expunge_and_new_mail_are_searchable_at_once(mail):
    store = mail.store
    assert store.expunge(mail.inbox.id) == [mail.uid["ko"]]
    mail.settle()
    assert mail.find(T("subject", "한국말")) == set()
    assert S.search(store, mail.account.id, T("subject", "한국말")) == []
    # "ja" is still in Archive after leaving INBOX: account-wide it is found.
    store.remove(mail.inbox.id, [mail.uid["ja"]])
    mail.settle()
    assert S.search(store, mail.account.id, T("body", "正常"), mail.inbox.id) == []
    assert S.search(store, mail.account.id, T("body", "正常")) == [mail.pk["ja"]]
    stored = append(mail.delivery, mail.account, mail.inbox, b"From: carol@example.net\r\n"
                                  b"Subject: Quarterly figures\r\n\r\nThe zeppelin budget.\r\n")
    assert S.search(store, mail.account.id, T("body", "zeppelin"), mail.inbox.id) == [stored.uid]
    assert S.search(store, mail.account.id, T("subject", "terly fig"), mail.inbox.id) == [stored.uid]


def test_index_follows_expunge_and_account_deletion(mail):
    store, backend = mail.store, mail.store.fulltext
    assert backend.drift(store, mail.account.id) == []
    store.expunge(mail.inbox.id)
    mail.settle()
    with store.reader() as conn:
        assert backend.indexed(conn, mail.account.id, [mail.pk["ko"]]) == set()
        assert backend.stale(conn) == {}
    store.delete_account("alice@example.org")
    mail.settle()
    with store.reader() as conn:
        assert backend.indexed(conn, mail.account.id, list(mail.pk.values())) == set()
        assert backend.stale(conn) == {}


def test_drift_and_reindex(mail):
    store, backend = mail.store, mail.store.fulltext
    lost = [mail.pk["ru"], mail.pk["de"]]
    with store.write() as txn:         # lose two messages' index entries
        backend.remove(txn, mail.account.id, lost)
    mail.settle()
    assert backend.drift(store, mail.account.id) == sorted(lost)
    assert mail.find(T("body", "появился")) == set()
    done = []
    assert backend.reindex(store, mail.account.id, progress=lambda d, t: done.append((d, t))) == len(KEYS)
    assert done[-1] == (len(KEYS), len(KEYS))
    assert backend.drift(store, mail.account.id) == []
    assert mail.find(T("body", "появился")) == {"ru"}
    assert mail.find(T("text", "x-mailer")) == {"ru", "ee"}


def test_snippets(shared_mail):
    from roost.storage.search_snippet import highlight, snippets
    m = shared_mail
    acct, pk = m.account.id, m.pk
    got = snippets(m.store, acct, [pk["ja"], pk["de"], pk["alt"]],
                   S.Or((T("text", "japanese"), T("body", "höhö"), T("subject", "テスト"))))
    assert got[pk["ja"]] == ("日本語メール<mark>テスト</mark> (testing <mark>Japanese</mark> emails)", None)
    # The preamble is indexed too, so the snippet's context starts in it.
    assert got[pk["de"]] == (None, "MIME format. Search for hähä Search for <mark>höhö</mark> "
                                   "kigaaldcbanejcbi.png")
    assert got[pk["alt"]] == (None, None)
    # Negated criteria are not highlighted; escaping and the 255-octet cap hold.
    assert snippets(m.store, acct, [pk["de"]], S.Not(T("body", "höhö"))) == {pk["de"]: (None, None)}
    long = "fish & <chips> " * 40 + "lunchtime " + "x " * 200
    out = highlight(long, T("body", "LUNCH"))
    assert "<mark>lunchtime</mark>" in out and "&amp;" in out and "<chips>" not in out
    assert len(out.encode()) <= 255
    assert highlight("Grüße, Straße", T("body", "grusse")) is None      # ß is not ss
    assert highlight("Grüße, Straße", T("body", "GRÜ")) == "<mark>Grüße</mark>, Straße"
    assert highlight("Grüße", T("body", "gru"), mark=None, escape=None) == "Grüße"
