"""What the listeners that log clients in (IMAP, submission, ManageSieve,
POP3) share before authentication: the gate that counts connections waiting
to log in, whether a connection came to a loopback address (where cleartext
passwords may be allowed), and the parsing of the SASL responses (PLAIN, and
the bearer tokens of OAUTHBEARER, RFC 7628, and XOAUTH2). The password mechanisms and the checks themselves
are the shared ``Authenticator``'s (roost.server.auth).

The parsers raise ``ValueError`` with a message; each protocol turns it into
its own reply (``501 5.5.2 ...``, ``NO ...``).
"""

import ipaddress


def is_loopback(host):
    """Is ``host`` (an address, maybe with a zone) a loopback one, IPv4-mapped included?"""
    try:
        addr = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return addr.is_loopback or bool(addr.version == 6 and addr.ipv4_mapped
                                    and addr.ipv4_mapped.is_loopback)


class PreauthGate:
    """Counts connections that have not logged in, per address and in all."""

    def __init__(self):
        self.by_ip = {}
        self.total = 0

    def enter(self, ip, per_ip, total):
        """Admit one more (True), or say which limit is reached."""
        if total and self.total >= total:
            return "too many connections are waiting to log in; try again later"
        if per_ip and self.by_ip.get(ip, 0) >= per_ip:
            return f"too many connections from {ip} are waiting to log in"
        self.total += 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return True

    def leave(self, ip):
        self.total -= 1
        left = self.by_ip.get(ip, 1) - 1
        if left:
            self.by_ip[ip] = left
        else:
            self.by_ip.pop(ip, None)


def parse_plain(data):
    """``(authzid, authcid, password)`` of a PLAIN response (RFC 4616)."""
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise ValueError("PLAIN wants authzid NUL authcid NUL password")
    return tuple(p.decode("utf-8", "replace") for p in parts)


def parse_oauthbearer(data):
    """``(user or "", token)`` of an RFC 7628 initial client response:
    ``n,a=user,^Aauth=Bearer T^A^A`` (no channel binding)."""
    flag, comma, rest = data.partition(b",")
    authz, comma2, rest = rest.partition(b",")
    if flag not in (b"n", b"y") or not comma or not comma2:
        raise ValueError("OAUTHBEARER wants a GS2 header without channel binding")
    user = ""
    if authz:
        if not authz.startswith(b"a="):
            raise ValueError("OAUTHBEARER: malformed authzid")
        user = authz[2:].decode("utf-8", "replace").replace("=2C", ",").replace("=3D", "=")
    token = _bearer(_kvpairs(rest.split(b"\x01")).get("auth"))
    if token is None:
        raise ValueError("OAUTHBEARER wants auth=Bearer <token>")
    return user, token


def parse_xoauth2(data):
    """``(user, token)`` of an XOAUTH2 response: ``user=U^Aauth=Bearer T^A^A``."""
    pairs = _kvpairs(data.split(b"\x01"))
    user, token = pairs.get("user"), _bearer(pairs.get("auth"))
    if user is None or token is None:
        raise ValueError("XOAUTH2 wants user=...^Aauth=Bearer ...^A^A")
    return user, token


def _kvpairs(items):
    out = {}
    for item in items:
        key, eq, value = item.partition(b"=")
        if eq:
            out.setdefault(key.decode("ascii", "replace").lower(),
                           value.decode("utf-8", "replace"))
    return out


def _bearer(value):
    scheme, _, token = (value or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
