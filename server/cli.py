"""The ``roost`` command line (DESIGN.md section 8; the names are a public contract).

``--data DIR`` (or ``ROOST_DATA``) selects the data directory for every
command, before or after the subcommand. ``roost deliver`` exits 0 when
delivered, 67 (EX_NOUSER) for an unknown recipient, 77 (EX_NOPERM, with the
reason on stderr) when the recipient's Sieve script rejected it and 75
(EX_TEMPFAIL) when the sender should retry, so Postfix can use it as
``mailbox_command``; Sieve's redirects and vacation replies go into the
outbound queue, which the running server's relay sends.
``roost import`` reports each message it cannot store (too large, over
quota, a failure storing it: its number in the file and the reason) and goes
on with the next; it exits 65 (EX_DATAERR) when it skipped any. A batch that
raises stores nothing, so its items are then stored one by one to find the
one that fails.
"""

import argparse
import getpass
import json
import os
import secrets
import sys
import time

from roost.storage import errors
from roost.storage.delivery import NO_SUCH_USER, REJECTED, TOO_LARGE, Delivery, Incoming, recover
from roost.storage.store import Store

from . import config as configmod

EX_OK, EX_USAGE, EX_DATAERR, EX_NOUSER, EX_SOFTWARE, EX_TEMPFAIL, EX_NOPERM = 0, 64, 65, 67, 70, 75, 77
LISTENERS = ("imap", "imaps", "lmtp", "jmap", "submission", "submissions", "smtp", "managesieve",
             "auth", "socketmap", "metrics", "pop3", "pop3s")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=argparse.SUPPRESS, help="data directory (or ROOST_DATA)")
    common.add_argument("--config", default=argparse.SUPPRESS, help="roost.toml")

    p = argparse.ArgumentParser(prog="roost", parents=[common],
                                description="Roost mailbox server")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="run the server")
    for name in LISTENERS:
        s.add_argument(f"--{name}", metavar="HOST:PORT", help=f"{name} listener, or off")
    s.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: [server] processes, or one per core; "
                   "1: a single process)")
    s.add_argument("--demo", action="store_true",
                   help="create demo@localhost with a printed password if there are no accounts")

    u = sub.add_parser("user", parents=[common], help="manage accounts").add_subparsers(
        dest="action", required=True)
    a = u.add_parser("add", parents=[common])
    a.add_argument("address")
    a.add_argument("--password-stdin", action="store_true")
    a.add_argument("--quota", type=int, help="quota in bytes")
    pw = u.add_parser("passwd", parents=[common])
    pw.add_argument("address")
    pw.add_argument("--password-stdin", action="store_true")
    u.add_parser("del", parents=[common]).add_argument("address")
    u.add_parser("list", parents=[common])
    q = u.add_parser("quota", parents=[common], help="show or set an account's limits")
    q.add_argument("address")
    q.add_argument("--storage", type=_limit, default=argparse.SUPPRESS,
                   help="storage limit in bytes, or none")
    q.add_argument("--messages", type=_limit, default=argparse.SUPPRESS,
                   help="limit on messages in mailboxes (a copy counts), or none")

    al = sub.add_parser("alias", parents=[common], help="manage aliases").add_subparsers(
        dest="action", required=True)
    aa = al.add_parser("add", parents=[common])
    aa.add_argument("alias")
    aa.add_argument("target")
    al.add_parser("del", parents=[common]).add_argument("alias")
    al.add_parser("list", parents=[common])

    d = sub.add_parser("deliver", parents=[common], help="deliver a message from stdin")
    d.add_argument("address")
    d.add_argument("--mailbox")
    d.add_argument("--sender", default=os.environ.get("SENDER"))

    i = sub.add_parser("import", parents=[common], help="import an mbox file or Maildir tree")
    i.add_argument("address")
    i.add_argument("path")
    i.add_argument("--mailbox", help="target mailbox for an mbox file (default INBOX)")

    e = sub.add_parser("export", parents=[common], help="export a mailbox as mboxrd")
    e.add_argument("address")
    e.add_argument("mailbox")
    e.add_argument("--mbox", required=True, metavar="FILE", help="output file, - for stdout")

    t = sub.add_parser("token", parents=[common],
                       help="app tokens (JMAP Bearer, or as a password)").add_subparsers(
        dest="action", required=True)
    ta = t.add_parser("add", parents=[common])
    ta.add_argument("address")
    ta.add_argument("name", help="what the token is for, e.g. phone")
    td = t.add_parser("del", parents=[common])
    td.add_argument("address")
    td.add_argument("name")

    m = sub.add_parser("mailbox", parents=[common], help="inspect mailboxes").add_subparsers(
        dest="action", required=True)
    ml = m.add_parser("list", parents=[common])
    ml.add_argument("address")
    ml.add_argument("--json", action="store_true")

    f = sub.add_parser("fsck", parents=[common], help="check and repair the store")
    f.add_argument("--rebuild", action="store_true", help="rebuild the database from the Maildir")

    r = sub.add_parser("reindex", parents=[common], help="rebuild the search index")
    r.add_argument("address", nargs="?", help="one account (default: every account)")

    k = sub.add_parser("dkim", parents=[common], help="DKIM keys").add_subparsers(
        dest="action", required=True)
    kg = k.add_parser("keygen", parents=[common])
    kg.add_argument("domain")
    kg.add_argument("--selector", help="default: roost (RSA), roost-ed25519 (Ed25519)")
    kg.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                    help="RSA 2048 (default; every verifier) or Ed25519 (RFC 8463; sign with both)")

    qu = sub.add_parser("queue", parents=[common], help="the outbound queue").add_subparsers(
        dest="action", required=True)
    ql = qu.add_parser("list", parents=[common])
    ql.add_argument("--json", action="store_true")
    for action in ("show", "retry", "hold", "release", "fail", "drop"):
        qa = qu.add_parser(action, parents=[common])
        qa.add_argument("id", nargs="?", type=int)
        if action in ("hold", "release"):
            qa.add_argument("--domain", help="a hold rule for mail to this domain")
            qa.add_argument("--account", help="a hold rule for mail from this account")
    su = sub.add_parser("suppression", parents=[common],
                        help="addresses mail is not sent to").add_subparsers(dest="action",
                                                                               required=True)
    su.add_parser("list", parents=[common])
    for action in ("add", "del"):
        su.add_parser(action, parents=[common]).add_argument("address")

    dn = sub.add_parser("dns", parents=[common], help="the DNS records to publish for a domain")
    dn.add_argument("domain")
    dn.add_argument("--mta-sts-mode", choices=("testing", "enforce", "none"), default="testing",
                    help="the MTA-STS policy's mode (default testing)")
    dr = sub.add_parser("doctor", parents=[common],
                        help="check ports, TLS, DNS, database, disk and clock")
    dr.add_argument("domains", nargs="*", metavar="DOMAIN",
                    help="domains to check in DNS (default: those of the accounts)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = configmod.load(getattr(args, "config", None), getattr(args, "data", None))
    handler = globals()[f"cmd_{args.command}"]
    try:
        return handler(args, cfg) or 0
    except errors.StoreError as exc:
        print(f"roost: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_DATAERR
    except KeyboardInterrupt:
        return 130


def open_store(cfg):
    return Store.open(cfg.data, cfg.database or None)


def open_account(cfg, address):
    """The store and the account at ``address`` (AccountNotFound when there is none)."""
    store = open_store(cfg)
    acct = store.account(address)
    if acct is None:
        raise errors.AccountNotFound(address)
    return store, acct


def read_password(args, confirm=True):
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        pw = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != pw:
            raise SystemExit("roost: passwords do not match")
    else:
        raise SystemExit("roost: no terminal; use --password-stdin")
    if not pw:
        raise SystemExit("roost: empty password")
    return pw


# --- commands ---------------------------------------------------------------

def cmd_serve(args, cfg):
    from .app import serve
    from .auth import hash_password
    for name in LISTENERS:
        value = getattr(args, name)
        if value is not None:
            configmod.check_listener(name, value)
            cfg.listen[name] = value
    if args.workers is not None:
        if args.workers < 1:
            raise SystemExit("roost: --workers must be at least 1")
        cfg.processes = args.workers
    if args.demo:
        store = open_store(cfg)
        if not store.accounts():
            password = secrets.token_urlsafe(12)
            store.add_account("demo@localhost", hash_password(password))
            print(f"roost: created demo@localhost with password {password}", flush=True)
        store.close()
    return serve(cfg)


def _limit(text):
    """A quota limit argument: a number of at least 0, or "none" (no limit)."""
    if text.lower() == "none":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or none")
    return int(text)


def cmd_user(args, cfg):
    from .auth import hash_password
    store = open_store(cfg)
    if args.action == "add":
        store.add_account(args.address, hash_password(read_password(args)), args.quota)
        print(f"roost: added {store.account(args.address).address}")
    elif args.action == "passwd":
        store.set_password(args.address, hash_password(read_password(args)))
    elif args.action == "del":
        store.delete_account(args.address)
    elif args.action == "quota":
        from roost.storage.quota import KEEP
        acct = store.require_account(args.address)
        usage = store.set_limits(acct.address, getattr(args, "storage", KEEP),
                                 getattr(args, "messages", KEEP))

        def limit(n):
            return "none" if n is None else n
        print(f"{acct.address}\tstorage {usage.used_bytes}/{limit(usage.quota_bytes)}"
              f"\tmessages {usage.messages}/{limit(usage.quota_messages)}")
    else:
        for acct in store.accounts():
            quota = acct.quota_bytes if acct.quota_bytes is not None else "-"
            print(f"{acct.address}\t{acct.used_bytes}\t{quota}")


def cmd_token(args, cfg):
    from roost.storage import account_data
    store, acct = open_account(cfg, args.address)
    if args.action == "add":
        print(account_data.create_token(store, acct.id, args.name))
    elif not account_data.delete_token(store, acct.id, args.name):
        print(f"roost: {args.address} has no token named {args.name}", file=sys.stderr)
        return EX_DATAERR


def cmd_alias(args, cfg):
    store = open_store(cfg)
    if args.action == "add":
        store.add_alias(args.alias, args.target)
    elif args.action == "del":
        store.delete_alias(args.alias)
    else:
        for alias, target in store.aliases():
            print(f"{alias}\t{target}")


def cmd_deliver(args, cfg):
    data = sys.stdin.buffer.read(cfg.max_message_size + 1)
    try:
        store = open_store(cfg)
        delivery = Delivery(store, max_size=cfg.max_message_size, dedupe_window=cfg.dedupe_window,
                            hostname=cfg.hostname)
        from .app import open_outbound
        delivery.outbound = open_outbound(cfg, store, delivery)
        (result,) = delivery.store(Incoming(data, (args.address,), sender=args.sender,
                                            mailbox_name=args.mailbox))
        delivery.close()
    except Exception as exc:  # noqa: BLE001 - any storage trouble means "retry later"
        print(f"roost: temporary failure: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    if result.ok:
        return EX_OK
    print(f"roost: {result.recipient}: {result.reason}", file=sys.stderr)
    if result.status == NO_SUCH_USER:
        return EX_NOUSER
    if result.status == TOO_LARGE:
        return EX_DATAERR  # permanent: the sender bounces it
    if result.status == REJECTED:
        return EX_NOPERM   # permanent, the reason (printed above) goes into the bounce
    return EX_TEMPFAIL  # over quota or storage trouble: the sender retries


def cmd_import(args, cfg):
    from roost.storage import mbox
    store, acct = open_account(cfg, args.address)
    delivery = Delivery(store, max_size=cfg.max_message_size)
    if mbox.is_maildir(args.path):
        entries = ((name, data, flags, date) for name, data, flags, date in mbox.read_maildir(args.path))
        total = sum(len(os.listdir(os.path.join(root, sub))) for root, _d, _f in os.walk(args.path)
                    for sub in ("cur", "new") if os.path.isdir(os.path.join(root, sub))
                    and os.path.basename(root) not in ("cur", "new", "tmp"))
    elif os.path.isfile(args.path):
        target = args.mailbox or "INBOX"
        entries = ((target, data, mbox.mbox_flags(data), mbox.from_line_date(line))
                   for data, line in mbox.read_mbox(args.path))
        total = None
    else:
        print(f"roost: {args.path} is neither an mbox file nor a Maildir", file=sys.stderr)
        return EX_USAGE
    progress = Progress(total)
    boxes, batch, batch_box, done, skipped, seen = {}, [], None, 0, 0, 0

    def store_batch():
        """One outcome per item: a DeliveryResult, or the exception storing it raised."""
        try:
            return delivery.store(*(item for _n, _box, item in batch))
        except Exception:  # noqa: BLE001 - find the item that fails, store the others
            out = []
            for _n, _box, item in batch:
                try:
                    out.extend(delivery.store(item))
                except Exception as exc:  # noqa: BLE001 - reported and skipped below
                    out.append(exc)
            return out

    def flush():
        nonlocal batch, done, skipped
        if batch:
            for (n, box, _item), r in zip(batch, store_batch()):
                if isinstance(r, Exception) or not r.ok:
                    why = f"{type(r).__name__}: {r}" if isinstance(r, Exception) else r.reason
                    print(f"roost: message {n} for {box}: {why}; skipped", file=sys.stderr)
                    skipped += 1
                else:
                    done += 1
            progress.show(done)
            batch = []

    for name, data, flags, date in entries:
        seen += 1
        if name not in boxes:
            try:
                boxes[name] = store.mailbox(acct.id, name)
            except errors.MailboxNotFound:
                boxes[name] = store.create_mailbox(acct.id, name)
        if name != batch_box or len(batch) >= 200:
            flush()
            batch_box = name
        batch.append((seen, name, Incoming(data, account=acct, mailboxes=(boxes[name],),
                                           flags=flags, internal_date=date)))
    flush()
    delivery.close()
    progress.finish(done)
    if skipped:
        print(f"roost: skipped {skipped} messages", file=sys.stderr)
        return EX_DATAERR
    return EX_OK


def cmd_export(args, cfg):
    from roost.storage import mbox
    store, acct = open_account(cfg, args.address)
    box = store.mailbox(acct.id, args.mailbox)
    out = sys.stdout.buffer if args.mbox == "-" else open(args.mbox, "wb")
    try:
        for rec in store.records(box.id):
            data = store.read(box.id, rec.uid)
            mbox.write_mbox(out, data, mbox.envelope_sender(data), rec.internal_date)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return EX_OK


def cmd_mailbox(args, cfg):
    store, acct = open_account(cfg, args.address)
    for box in store.mailboxes(acct.id, counts=True):
        row = {"name": box.name, "role": box.role, "messages": box.messages, "unseen": box.unseen,
               "uidvalidity": box.uidvalidity, "uidnext": box.uidnext,
               "highestmodseq": box.highestmodseq}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{box.name}\t{box.role or '-'}\t{box.messages}\t{box.unseen}")


def cmd_fsck(args, cfg):
    from roost.storage import fsck
    store = open_store(cfg)
    if args.rebuild:
        report = fsck.rebuild(store)
    else:
        published, discarded = recover(store)
        report = fsck.check(store, repair=True)
        report.insert(0, f"recovered: {published} staged files published, {discarded} discarded")
    for line in report:
        print(line)
    return EX_OK


def cmd_reindex(args, cfg):
    store = open_store(cfg)
    try:
        if args.address:
            acct = store.account(args.address)
            if acct is None:
                print(f"roost: no such account: {args.address}", file=sys.stderr)
                return EX_NOUSER
            accounts = [acct]
        else:
            accounts = store.accounts()
        for acct in accounts:
            progress = Progress(0)

            def show(done, total, progress=progress):
                progress.total = total
                progress.show(done)
            count = store.fulltext.reindex(store, acct.id, progress=show)
            progress.finish(count, f"reindexed {acct.address}:")
        with store.reader() as conn:
            stale = store.fulltext.stale(conn)
        store.fulltext.remove_stale(store, stale)
        if not args.address:
            from roost.storage import reindex
            reindex.set_version(store)      # the whole index is in this release's format
    finally:
        store.close()
    return EX_OK


def cmd_dkim(args, cfg):
    from .doctor import dkim_keygen
    try:
        record = dkim_keygen(cfg, args.domain, args.selector, args.algorithm)
    except FileExistsError as exc:
        selector = os.path.basename(exc.filename or "")[:-4] or args.selector
        print(f"roost: {args.domain} already has a DKIM key with selector {selector}; "
              "choose another --selector", file=sys.stderr)
        return EX_USAGE
    except ValueError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return EX_USAGE
    print(record.zone_line())
    return EX_OK


def _queue(cfg):
    from .app import open_outbound
    store = open_store(cfg)
    delivery = Delivery(store, max_size=cfg.max_message_size, hostname=cfg.hostname)
    delivery.outbound = open_outbound(cfg, store, delivery)   # Sieve's redirects of local retries
    return store, delivery.outbound


def _when(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def cmd_queue(args, cfg):
    store, q = _queue(cfg)
    try:
        if args.action == "list":
            for m in q.list():
                if args.json:
                    print(json.dumps(m, sort_keys=True))
                    continue
                counts = " ".join(f"{k}={v}" for k, v in sorted(m["recipients"].items()))
                held = " held" if m["held"] else ""
                print(f"{m['id']}	{_when(m['created'])}	<{m['sender']}>	{m['size']}	{counts}{held}")
            return EX_OK
        rule = getattr(args, "domain", None) or getattr(args, "account", None)
        if args.action in ("hold", "release") and rule:
            return _hold_rule(store, q, args)
        if args.id is None:
            print(f"roost: queue {args.action} needs a message id (see roost queue list)",
                  file=sys.stderr)
            return EX_USAGE
        if args.action == "show":
            m = q.show(args.id)
            if m is None:
                print(f"roost: no queued message {args.id}", file=sys.stderr)
                return EX_DATAERR
            for key in ("id", "sender", "size", "kind", "held", "ret", "envid", "requiretls"):
                print(f"{key}: {m[key]}")
            print(f"created: {_when(m['created'])}\nrelease_at: {_when(m['release_at'])}")
            for r in m["rcpts"]:
                print(f"rcpt: <{r['address']}> {r['state']} attempts={r['attempts']} "
                      f"next={_when(r['next_attempt'])} reply={r['reply'] or '-'}")
            return EX_OK
        done = {"retry": q.retry, "hold": q.hold, "release": q.release, "fail": q.fail,
                "drop": q.drop}[args.action](args.id)
        if not done:
            print(f"roost: queue {args.action} {args.id}: no such message, or nothing to do",
                  file=sys.stderr)
            return EX_DATAERR
        print(f"roost: {args.action} {args.id}: done")
        return EX_OK
    finally:
        store.close()


def _hold_rule(store, q, args):
    account_id = None
    if args.account:
        acct = store.account(args.account)
        if acct is None:
            raise errors.AccountNotFound(args.account)
        account_id = acct.id
    domain = args.domain.lower() if args.domain else None
    if args.action == "hold":
        print(f"roost: hold rule {q.add_hold_rule(account_id, domain)} added")
        return EX_OK
    gone = [r["id"] for r in q.hold_rules()
            if r["account_id"] == account_id and r["domain"] == domain]
    for rule in gone:
        q.del_hold_rule(rule)
    print(f"roost: {len(gone)} hold rule(s) removed")
    return EX_OK if gone else EX_DATAERR


def cmd_suppression(args, cfg):
    store, q = _queue(cfg)
    try:
        if args.action == "list":
            for row in q.suppressions():
                until = _when(row["expires"]) if row["expires"] else "forever"
                print(f"{row['address']}\t{_when(row['created'])}\t{until}\t{row['reason']}")
        elif args.action == "add":
            q.suppress(args.address)
        elif not q.unsuppress(args.address):
            print(f"roost: {args.address} is not suppressed", file=sys.stderr)
            return EX_DATAERR
        return EX_OK
    finally:
        store.close()


def cmd_dns(args, cfg):
    from .doctor import zone
    try:
        lines = zone(cfg, args.domain, args.mta_sts_mode)
    except ValueError as exc:           # an unreadable DKIM key file
        print(f"roost: {exc}", file=sys.stderr)
        return EX_DATAERR
    for line in lines:
        print(line)
    return EX_OK


def cmd_doctor(args, cfg):
    from .doctor import FAIL, doctor
    checks = doctor(cfg, args.domains)
    for check in checks:
        print(check, flush=True)
    return 1 if any(c.verdict == FAIL for c in checks) else EX_OK


class Progress:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self, total):
        self.total = total
        self.tty = sys.stderr.isatty()

    def show(self, done):
        if not self.tty:
            return
        if self.total:
            width = 30
            filled = int(width * min(done, self.total) / self.total)
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(f"\r[{bar}] {done}/{self.total}")
        else:
            sys.stderr.write(f"\r{done} messages")
        sys.stderr.flush()

    def finish(self, done, verb="imported"):
        if self.tty:
            sys.stderr.write("\n")
        print(f"roost: {verb} {done} messages")


if __name__ == "__main__":
    sys.exit(main())
