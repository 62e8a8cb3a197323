"""Hypothesis: no JMAP request makes a method fail other than with a JMAP
error (never ``serverFail``, the sign of a bug), and nothing one account
sends touches another account's objects."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.protocols.jmap import core
from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.store import Store

from tests.conftest import append

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
         "urn:ietf:params:jmap:submission", "urn:ietf:params:jmap:vacationresponse",
         "urn:ietf:params:jmap:blob", "urn:ietf:params:jmap:quota"]
MESSAGE = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: fuzz\r\n"
           b"Message-ID: <fuzz@example.org>\r\n\r\nbody\r\n")

KEYS = ["accountId", "ids", "properties", "filter", "sort", "position", "anchor", "anchorOffset",
        "limit", "calculateTotal", "collapseThreads", "sinceState", "sinceQueryState",
        "maxChanges", "create", "update", "destroy", "ifInState", "bodyProperties",
        "fetchTextBodyValues", "fetchAllBodyValues", "maxBodyValueBytes", "emailIds", "blobIds",
        "emails", "onDestroyRemoveEmails", "fromAccountId", "operator", "conditions", "inMailbox",
        "text", "subject", "hasKeyword", "keywords", "mailboxIds", "name", "parentId", "role",
        "keywords/$seen", "mailboxIds/M1", "header:Subject:asText", "bodyStructure", "textBody",
        "partId", "blobId", "type", "subParts", "bodyValues", "value", "property", "isAscending",
        "identityId", "emailId", "envelope", "before", "after", "minSize", "header",
        "#ids", "resultOf", "path", "onSuccessUpdateEmail", "isEnabled", "upToId"]
VALUES = ["A1", "A2", "M1", "M2", "E1", "E2", "T1", "I1", "S1", "#c", "$seen", "subject",
          "receivedAt", "2026-01-01T00:00:00Z", "/ids", "/list/*/id", "AND", "OR", "NOT",
          "inbox", "text/plain", "multipart/mixed", "singleton", "", "0", "1", "x" * 300]

leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**54), st.sampled_from(VALUES),
                 st.text(max_size=12))
json_value = st.recursive(
    leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.sampled_from(VALUES)), inner,
                        max_size=5)),
    max_leaves=25)
arguments = st.dictionaries(st.sampled_from(KEYS), json_value, max_size=6)
calls = st.lists(st.tuples(st.sampled_from(sorted(core.METHODS) + ["Nope/get"]), arguments,
                           st.sampled_from(["a", "b", "c"])), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def world():
    store = Store.memory()
    delivery = Delivery(store)
    a = store.add_account("a@example.org")
    b = store.add_account("b@example.org")
    append(delivery, a, store.mailbox(a.id, "INBOX"), MESSAGE)
    append(delivery, b, store.mailbox(b.id, "INBOX"), MESSAGE)
    yield Backend(store, delivery), a, b
    delivery.close()
    store.close()


def b_snapshot(store, b):
    boxes = [(m.id, m.name, m.messages, m.unseen) for m in store.mailboxes(b.id, counts=True)]
    return boxes, store.state(b.id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(calls=calls)
def test_requests_never_fail_the_server_or_cross_accounts(world, calls):
    backend, a, b = world
    before = b_snapshot(backend.store, b)
    request = {"using": USING, "methodCalls": [[n, dict(args, accountId=args.get("accountId", "A1")),
                                                 cid] for n, args, cid in calls]}
    result = core.process(backend, a, request)
    for name, body, _cid in result["methodResponses"]:
        assert isinstance(body, dict)
        if name == "error":
            assert body["type"] != "serverFail", (request, body)
    assert b_snapshot(backend.store, b) == before
