"""Hypothesis: no JMAP request makes a method fail other than with a JMAP
error (never ``serverFail``, the sign of a bug), nothing one account
sends touches another account's objects, and every error, method-level or
SetError, has a type an RFC defines."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.protocols.jmap import core
from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.outbound import MemorySpool, Outbound
from roost.storage.store import Store

from tests.conftest import append

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
         "urn:ietf:params:jmap:submission", "urn:ietf:params:jmap:vacationresponse",
         "urn:ietf:params:jmap:blob", "urn:ietf:params:jmap:quota", "urn:ietf:params:jmap:sieve"]
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
    yield Backend(store, delivery, outbound=Outbound(store, delivery, MemorySpool(), "localhost")), a, b
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


# --- error types ------------------------------------------------------------------

# SetError types: RFC 8620 section 5.3 (and 5.4 for /copy), RFC 8621 sections
# 2.5, 4.6, 4.8, 7.5, RFC 9404 (the standard ones for Blob/upload), RFC 9661
# section 2.4 (SieveScript/set).
SET_ERROR_TYPES = frozenset({
    "forbidden", "overQuota", "tooLarge", "rateLimit", "notFound", "invalidPatch", "willDestroy",
    "invalidProperties", "singleton", "alreadyExists",
    "mailboxHasChild", "mailboxHasEmail", "blobNotFound", "tooManyKeywords", "tooManyMailboxes",
    "invalidEmail", "tooManyRecipients", "noRecipients", "invalidRecipients", "forbiddenMailFrom",
    "forbiddenFrom", "forbiddenToSend", "cannotUnsend", "invalidSieve", "sieveIsActive"})
# method-level error types: RFC 8620 sections 3.6.2 and 5, RFC 8621, RFC 9404
METHOD_ERROR_TYPES = frozenset({
    "serverUnavailable", "serverFail", "serverPartialFail", "unknownMethod", "invalidArguments",
    "invalidResultReference", "forbidden", "accountNotFound", "accountNotSupportedByMethod",
    "accountReadOnly", "requestTooLarge", "stateMismatch", "cannotCalculateChanges",
    "anchorNotFound", "unsupportedSort", "unsupportedFilter", "tooManyChanges",
    "fromAccountNotFound", "fromAccountNotSupportedByMethod", "unknownDataType"})

SET_METHODS = sorted(m for m in core.METHODS if m.endswith(("/set", "/import", "/upload", "/copy")))
PROPS = ["id", "name", "parentId", "role", "sortOrder", "isSubscribed", "mailboxIds", "keywords",
         "receivedAt", "subject", "from", "to", "bodyStructure", "textBody", "htmlBody",
         "bodyValues", "attachments", "blobId", "size", "threadId", "identityId", "emailId",
         "envelope", "undoStatus", "email", "replyTo", "bcc", "textSignature", "deviceClientId",
         "url", "keys", "verificationCode", "expires", "types", "isEnabled", "fromDate", "data",
         "type", "header:Subject:asText", "keywords/$seen", "mailboxIds/M1", "mailFrom", "rcptTo",
         "partId", "value", "charset", "p256dh", "auth", "offset", "length", "data:asText",
         "data:asBase64", "headers"]
IDS = ["M1", "M2", "M3", "M9", "E1", "E2", "E9", "I1", "S1", "P1", "B1", "Z1", "singleton", "#c1",
       "#c2", "", "x"]
ODD = ["https://push.invalid.example/x", "https://127.0.0.1/x", "http://plain.example/",
       "2026-01-01T00:00:00Z", "2026-13-45T99:00:00Z", "not a date", "a@example.org",
       "b@example.org", "inbox", "trash", "pending", "canceled", "final", "\u00e9", "$seen",
       "aGVsbG8=", "!!", "text/plain"]
odd_leaf = st.one_of(leaf, st.sampled_from(IDS + ODD))
odd_value = st.recursive(odd_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(PROPS + IDS), inner, max_size=4)), max_leaves=12)
odd_object = st.dictionaries(st.sampled_from(PROPS), odd_value, max_size=6)
creates = st.dictionaries(st.sampled_from(["c1", "c2", "c3"]), st.one_of(odd_object, odd_value),
                          max_size=3)
set_arguments = st.fixed_dictionaries({}, optional={
    "create": creates, "emails": creates,
    "update": st.dictionaries(st.sampled_from(IDS), st.one_of(odd_object, odd_value), max_size=3),
    "destroy": st.lists(st.sampled_from(IDS), max_size=3),
    "blobIds": st.lists(st.sampled_from(IDS), max_size=3),
    "onSuccessUpdateEmail": st.dictionaries(st.sampled_from(IDS), odd_object, max_size=2),
    "onSuccessDestroyEmail": st.lists(st.sampled_from(IDS), max_size=2),
    "onDestroyRemoveEmails": st.booleans(),
    "fromAccountId": st.sampled_from(["A1", "A2", "A9"])})
set_calls = st.lists(st.tuples(st.sampled_from(SET_METHODS), set_arguments,
                               st.sampled_from(["a", "b"])), min_size=1, max_size=3)


def check_error_types(result, request):
    for name, body, _cid in result["methodResponses"]:
        if name == "error":
            assert body["type"] in METHOD_ERROR_TYPES, (request, body)
            assert body["type"] != "serverFail", (request, body)
            continue
        for key in ("notCreated", "notUpdated", "notDestroyed", "notCopied"):
            errors = body.get(key)
            if errors is None:
                continue
            assert isinstance(errors, dict), (request, key, errors)
            for oid, err in errors.items():
                assert isinstance(err, dict) and err.get("type") in SET_ERROR_TYPES, \
                    (request, key, oid, err)
                if "description" in err:
                    assert isinstance(err["description"], str), (request, err)
                if "properties" in err:
                    assert isinstance(err["properties"], list) and \
                        all(isinstance(p, str) for p in err["properties"]), (request, err)


def test_set_error_types_are_the_rfcs():
    """The lists above name every type the code can produce (so a new one is
    added here, checked against the RFCs, on purpose)."""
    import pathlib
    import re
    src = "".join(p.read_text() for p in
                  pathlib.Path(core.__file__).parent.glob("*.py"))
    made = set(re.findall(r'set_error\(\s*"(\w+)"', src)) | \
        set(re.findall(r'"notCopied".*?"type": "(\w+)"', src)) | \
        set(re.findall(r'\{"type": "(\w+)"\}', src))
    assert made - {"requestTooLarge", "serverFail"} <= SET_ERROR_TYPES, made - SET_ERROR_TYPES
    raised = set(re.findall(r'MethodError\(\s*"(\w+)"', src))
    assert raised <= METHOD_ERROR_TYPES, raised - METHOD_ERROR_TYPES


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(calls=set_calls)
def test_set_methods_answer_only_rfc_error_types(world, calls):
    backend, a, b = world
    before = b_snapshot(backend.store, b)
    request = {"using": USING, "methodCalls": [
        [n, args if n.startswith("PushSubscription/") else dict(args, accountId="A1"), cid]
        for n, args, cid in calls]}
    check_error_types(core.process(backend, a, request), request)
    assert b_snapshot(backend.store, b) == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(calls=calls)
def test_any_method_answers_only_rfc_error_types(world, calls):
    backend, a, _b = world
    request = {"using": USING, "methodCalls": [[n, dict(args, accountId=args.get("accountId", "A1")),
                                                 cid] for n, args, cid in calls]}
    check_error_types(core.process(backend, a, request), request)
