"""Listening sockets, bound before anything serves on them.

``bind`` makes the socket of one listener: TCP (IPv4 or IPv6, port 0 picks a
free port) or, for the auth and socketmap services, a Unix socket when the
address is a path (a stale socket file is replaced, a live one refused, the
new one is mode 0660). A single process binds and serves; the supervisor of
worker processes (``server.workers``) binds once, and every worker serves
the same sockets (the kernel hands each connection to one of them).
"""

import os
import socket
import stat
from dataclasses import dataclass

BACKLOG = 1024


@dataclass
class Bound:
    name: str
    sock: socket.socket
    host: str            # the address, or the socket file's path
    port: int | None     # None: a Unix socket

    @property
    def where(self):
        return self.host if self.port is None else f"{self.host}:{self.port}"


def bind(name, host, port):
    """The listening socket of listener ``name`` at ``host:port`` (``port``
    None: ``host`` is a Unix socket path)."""
    if port is None:
        return Bound(name, _unix(host), host, None)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY only on sockets whose proto is TCP
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return Bound(name, sock, host, sock.getsockname()[1])


def _unix(path):
    if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)     # stale: nothing answers on it
        else:
            raise OSError(f"{path}: another server is listening on this socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
