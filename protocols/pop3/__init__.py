"""POP3 (RFC 1939) on ``roost serve --pop3`` (STLS, default 127.0.0.1:1110)
and ``--pop3s`` (implicit TLS, default 127.0.0.1:1995): mail clients that
download the INBOX and maybe delete it from the server.

Design choices:

- asyncio streams on the server's loop, as ManageSieve; ``serve(ctx,
  reader, writer)`` is one connection, ``session`` owns its states
  (AUTHORIZATION, TRANSACTION, UPDATE) and commands.
- The maildrop is the account's INBOX only. At login the session takes a
  snapshot of it (UIDs and sizes, in UID order): message numbers and sizes
  stay fixed for the session, and mail delivered meanwhile shows at the
  next login (RFC 1939 section 8). Sizes are exact for what is sent: the
  stored octets with every bare LF counted as CRLF and a final CRLF
  added where the message has none (RFC 1939 section 11); they are computed
  once per message (its bytes never change) and cached per process by
  mailbox, UIDVALIDITY and UID (a UID is never reused; a message id may be).
- UIDL is ``<uidvalidity>.<uid>`` of the INBOX: stable across sessions and
  processes, never reused for another message while the INBOX exists.
- DELE only marks; QUIT applies the marks in one store transaction
  (``Store.remove``, an expunge as IMAP's: change log, VANISHED, JMAP
  destroyed). A connection that drops, times out or is shut down deletes
  nothing. Messages sent whole by RETR and not deleted get ``\\Seen`` at
  QUIT too (after the deletions, in a transaction of their own), so IMAP
  clients of the same account show them read; TOP changes nothing.
- The maildrop lock is a store lease (``storage.leases``) named
  ``pop3:<account_id>``, held by this process and session and renewed while
  the session lives, so a second session on the same maildrop, in this
  process or another, gets ``-ERR [IN-USE]`` (RFC 2449 section 8.1.2). A
  server that stops gives up its leases (``Context.release_all``); a crashed
  process's lease lapses after ``LEASE_TTL`` seconds (until then its users
  get ``[IN-USE]``).
- Logging in: USER/PASS and SASL PLAIN (RFC 5034, with an initial response
  or a ``+`` challenge; ``*`` cancels), through the shared
  ``Authenticator`` (its penalties, argon2 pool and "login" events; an app
  token is accepted as the password, as elsewhere). Without TLS both are
  refused except over a loopback connection (``[pop3]
  loopback_cleartext``), and CAPA then lists neither USER nor SASL. APOP is
  not offered. Credential failures are ``-ERR [AUTH]`` (RFC 3206),
  refusals for earlier failures or a busy server ``-ERR [SYS/TEMP]``.
- STLS (RFC 2595) in the AUTHORIZATION state before login, with the
  server's TLS context; bytes pipelined after STLS are refused (they came
  in clear) and the connection is closed.
- Pipelining (RFC 2449): commands are read and answered strictly in order;
  the reply to one is written (with back-pressure) before the next runs.
- Bounds: a command line is at most ``MAX_LINE`` octets (longer: ``-ERR``
  and the connection ends), the unauthenticated gate per IP and in all
  (``[limits]``), ``MAX_PREAUTH_COMMANDS`` commands and
  ``MAX_AUTH_FAILURES`` failures before login, the idle timeout
  (``unauthenticated_command_timeout`` before login, ``AUTHENTICATED_TIMEOUT``
  = 10 minutes after, RFC 1939 section 3).
- CAPA lists only what works: TOP, UIDL, USER and SASL PLAIN (when a
  password may be given), STLS (when TLS can start), RESP-CODES,
  AUTH-RESP-CODE, PIPELINING, EXPIRE NEVER (Roost never removes mail by
  itself), IMPLEMENTATION. LOGIN-DELAY is not announced (no delay is
  enforced between logins beyond the failed-login penalties).
"""

from dataclasses import dataclass, field

from roost.protocols.linesession import LineContext

from .session import LEASE_TTL, MAX_LINE, Session


@dataclass
class Context(LineContext):
    """``LineContext`` and ``holder``, this process's name in the maildrop
    leases, and the wire sizes of messages already measured."""
    holder: str = ""
    sizes: dict = field(default_factory=dict)    # (mailbox, uidvalidity, uid) -> size as sent

    def shutdown(self):
        """The server is stopping: new connections are refused; open ones are
        closed by the server without applying their deletions."""
        self.closing = True

    def release_all(self):
        """(blocking) At the very end of a stop: every maildrop lease this
        process still holds goes, so a restarted server does not wait for
        them to lapse."""
        self.store.release_leases_of(self.holder + ":")


async def serve(ctx, reader, writer, implicit_tls=False):
    """One POP3 connection, to its end."""
    await Session(ctx, reader, writer, implicit_tls).run()


__all__ = ["Context", "LEASE_TTL", "MAX_LINE", "serve"]
