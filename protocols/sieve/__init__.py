"""ManageSieve (RFC 5804) on ``roost serve --managesieve`` (default
127.0.0.1:4190): clients upload, list, activate, fetch and delete the Sieve
scripts that delivery runs (``storage.sieve.scripts``, the same list JMAP
SieveScript edits, including the generated VacationResponse script).

Design choices:

- asyncio streams on the server's loop, as the other line protocols that are
  not Twisted (``auth``, ``socketmap``); ``serve(ctx, reader, writer)`` is one
  connection. ``wire`` parses commands (atoms, quoted strings, ``{n+}`` and
  ``{n}`` literals, bounded) and writes strings; ``session`` owns the state
  and the commands.
- TLS and cleartext as IMAP: STARTTLS with the server's TLS context (the
  ``ssl.SSLContext`` of ``server.tls``, which follows certificate reloads);
  without TLS, AUTHENTICATE is allowed only on a loopback connection, and the
  SASL capability is empty elsewhere (``NO (ENCRYPT-NEEDED)`` if tried).
  Pipelined bytes after STARTTLS are refused (they came in clear).
- SASL PLAIN and LOGIN (the password, or an app token given as the password,
  as JMAP Basic allows) and OAUTHBEARER with an app token (``roost token
  add``), all through the shared ``Authenticator``: its penalties per
  (account, source) and per source, its argon2 pool and its "login" events.
  A refusal for earlier failures is ``BYE (TRYLATER)``, a busy server ``NO
  (TRYLATER)``; ``MAX_AUTH_FAILURES`` failures on one connection end it.
- Bounds: the unauthenticated connection gate (per IP and in all, with
  ``[limits]``' numbers), ``MAX_PREAUTH_COMMANDS`` commands before login,
  the idle timeout (``unauthenticated_command_timeout`` before login,
  ``AUTHENTICATED_TIMEOUT`` after), line, string and literal sizes (scripts at
  most ``storage.sieve.MAX_SCRIPT_SIZE``).
- Scripts: UTF-8, checked by ``storage.sieve.compile`` (the interpreter's
  own check): an invalid one gets ``NO "line N: ..."`` from PUTSCRIPT and
  CHECKSCRIPT and is never stored; SETACTIVE compiles again before it
  activates. Store errors map to response codes in one place
  (``Session.call``): QUOTA/MAXSCRIPTS, QUOTA/MAXSIZE, NONEXISTENT, ACTIVE,
  ALREADYEXISTS. The VacationResponse script ("vacation") is shown, fetched
  and (de)activated like any other but cannot be written or renamed here.
- SIEVE lists ``storage.sieve.EXTENSIONS`` as it is when asked; NOTIFY is
  "mailto", MAXREDIRECTS ``session.MAX_REDIRECTS``.
- Shutdown (``Context.shutdown``): every session gets ``BYE``, then the
  server closes the connections.
- Logs: "connection" open/close and "login" events at INFO, one "command"
  event per command at DEBUG (``server.logs``).
"""

from roost.protocols.linesession import LineContext

from .session import Session
from .wire import MAX_LINE


class Context(LineContext):
    """What the connections share (``LineContext``)."""

    def shutdown(self):
        """The server is stopping: every session gets BYE (the server then
        closes the connections); new ones are refused."""
        self.closing = True
        for session in list(self.sessions):
            session.bye("the server is shutting down")


async def serve(ctx, reader, writer):
    """One ManageSieve connection, to its end."""
    await Session(ctx, reader, writer).run()


__all__ = ["Context", "MAX_LINE", "serve"]
