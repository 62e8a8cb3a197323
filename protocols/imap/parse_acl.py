"""The grammar of the RFC 4314 commands: SETACL, DELETEACL, GETACL,
LISTRIGHTS and MYRIGHTS (section 7). Identifiers and rights are astrings;
their meaning is the handler's to judge (``commands.acl``)."""

from dataclasses import dataclass

from .wire import Command


@dataclass
class AclCommand(Command):
    mailbox: str = ""
    identifier: str = None    # SETACL, DELETEACL, LISTRIGHTS
    rights: str = None        # SETACL


def setacl(args):
    """SETACL; rights left out (``SETACL box who `` with nothing after the
    space, what IMAPClient sends for ``setacl(box, who, "")``) are empty rights."""
    cmd = AclCommand(mailbox=args.astring("a mailbox name"), identifier=args.astring("an identifier"))
    cmd.rights = args.astring("rights") if args.more() else ""
    return cmd


def with_identifier(args):
    return AclCommand(mailbox=args.astring("a mailbox name"), identifier=args.astring("an identifier"))


def mailbox_only(args):
    return AclCommand(mailbox=args.astring("a mailbox name"))
