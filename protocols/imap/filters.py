"""RFC 5465 filter-mailboxes resolved to the account's mailboxes.

NOTIFY (RFC 5465) and MULTISEARCH's ESEARCH IN (RFC 7377) name mailboxes
the same way; ``resolve`` turns ``parse_ext.Filter`` values into the
mailboxes they name today (names are looked up again at each event, so a
filter keeps naming what it names as mailboxes come and go). INBOXES is
INBOX: it is the one mailbox delivery puts mail in without a Sieve
``fileinto``. SUBSCRIBED reads ``subscribed`` of the mailbox records, which
the store computes from the subscriptions table (``storage.imapstate``) at
each read; a caller matching a name without a mailbox passes an object with
``name``, ``id`` and ``subscribed`` of its own.
"""

SEPARATOR = "/"


def matches(flt, box, selected_pk, names):
    """Does Filter ``flt`` name ``box``? ``names``: the filter's decoded names."""
    kind = flt.kind
    if kind in ("SELECTED", "SELECTED-DELAYED"):
        return box.id == selected_pk
    if kind == "INBOXES":
        return box.name == "INBOX"
    if kind == "PERSONAL":
        return True
    if kind == "SUBSCRIBED":
        return bool(getattr(box, "subscribed", False))
    if kind == "MAILBOXES":
        return box.name in names
    for name in names:          # SUBTREE, SUBTREE-ONE
        if box.name == name:
            return True
        if box.name.startswith(name + SEPARATOR):
            if kind == "SUBTREE" or SEPARATOR not in box.name[len(name) + 1:]:
                return True
    return False


def decoded(s, flt):
    """The filter's mailbox names as store names (``session.mailbox_name``)."""
    return frozenset(s.mailbox_name(n) for n in flt.names)


def resolve(s, filters, boxes, selected_pk=None):
    """The mailboxes of ``boxes`` that any of ``filters`` names, in ``boxes`` order."""
    named = [(f, decoded(s, f)) for f in filters]
    return [b for b in boxes if any(matches(f, b, selected_pk, n) for f, n in named)]
