"""SearchSnippet/get (RFC 8621 section 5).

Highlights come from ``storage.search_snippet`` (the one highlighter, shared
with IMAP PREVIEW), over the criteria tree that ``email_query.compile_filter``
builds for Email/query.
"""

from roost.storage import emails, search_snippet
from roost.storage import search as criteria
from roost.storage.store import parse_oid

from .core import MAIL, ids_arg, method
from .email_query import compile_filter


@method("SearchSnippet/get", MAIL)
def snippet_get(ctx, args):
    """Highlights come from ``storage.search_snippet`` (the one highlighter,
    shared with IMAP PREVIEW), over the same criteria tree Email/query uses."""
    ctx.check_account(args)
    ids = ids_arg(ctx, args, "emailIds", required=True)
    filt = args.get("filter")
    node = compile_filter(ctx, filt) if filt is not None else criteria.All()
    pks = [parse_oid("E", i) for i in ids]
    found_pks = emails.get_messages(ctx.store, ctx.account.id, [p for p in pks if p],
                                    parsed=False, summary=False)
    marked = search_snippet.snippets(ctx.store, ctx.account.id, list(found_pks), node)
    found, missing = [], []
    for i, pk in zip(ids, pks):
        if pk not in found_pks:
            missing.append(i)
            continue
        subject, preview = marked.get(pk, (None, None))
        found.append({"emailId": i, "subject": subject, "preview": preview})
    return {"accountId": ctx.account_id_str, "list": found, "notFound": missing or None}
