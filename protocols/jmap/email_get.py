"""Email/get and Email/changes (RFC 8621 sections 4.2 and 4.3).

Reads messages by id through ``storage.emails.get_messages``, asking for the
parsed structure and the address summary only when a wanted property needs
them; the objects come from ``email_common.email_json``.
"""

from roost.storage import emails
from roost.storage.store import email_oid, parse_oid

from . import bodies
from .core import MAIL, MethodError, changes_response, ids_arg, method
from .email_common import (ALL_PROPS, DEFAULT_PROPS, SUMMARY_FIELDS, SUMMARY_PROPS, check_props,
                           email_json, get_options)


@method("Email/get", MAIL)
def email_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = check_props(args, "properties", ALL_PROPS, DEFAULT_PROPS)
    body_props = check_props(args, "bodyProperties", bodies.BODY_PART_PROPERTIES,
                              bodies.DEFAULT_BODY_PART_PROPERTIES)
    opts = get_options(args)
    state = str(ctx.state("Email"))
    if ids is None:
        raise MethodError("requestTooLarge", "Email/get needs ids")
    if "id" not in props:
        props.insert(0, "id")
    pks = [parse_oid("E", i) for i in ids]
    need_parsed = any(p not in SUMMARY_PROPS for p in props)
    need_summary = any(p in SUMMARY_FIELDS for p in props)
    infos = emails.get_messages(ctx.store, ctx.account.id, [p for p in pks if p],
                                parsed=need_parsed, summary=need_summary)
    found, missing = [], []
    for i, pk in zip(ids, pks):
        info = infos.get(pk)
        if info is None:
            missing.append(i)
        else:
            found.append(email_json(ctx, info, props, body_props, opts))
            ctx.spend(found[-1])
    return {"accountId": ctx.account_id_str, "state": state, "list": found, "notFound": missing}


@method("Email/changes", MAIL)
def email_changes(ctx, args):
    return changes_response(ctx, args, "Email", email_oid)
