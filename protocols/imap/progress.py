"""INPROGRESS (RFC 9585): progress of a long command, as untagged OKs.

``start(session, cmd)`` is called by the session around every handler; for
the commands in VERBS it arms a timer: a command still running after FIRST
seconds gets ``* OK [INPROGRESS ("tag" count total)] still working``, and
again every EVERY seconds until it ends. ``count``/``total`` are what the
handler last reported (``session.progress.count``/``.total``; FETCH reports
messages sent of messages asked for); a handler that waits on one store call
(SEARCH, STORE, COPY, MOVE, EXPUNGE) cannot count and sends NIL NIL, as RFC
9585 section 3 allows.

The timer fires on the event loop only while the handler is suspended, when
the session's output holds whole responses; a handler sending one response
in pieces (a big FETCH literal) sets ``safe`` False meanwhile, and the
notice waits for the next firing.
"""

VERBS = frozenset({"FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "ESEARCH",
                   "SORT", "THREAD"})
FIRST = 2.0        # seconds a command runs before the first notice
EVERY = 5.0        # seconds between notices


class Progress:
    __slots__ = ("session", "tag", "count", "total", "safe", "handle")

    def __init__(self, session, tag):
        self.session = session
        self.tag = tag
        self.count = self.total = None
        self.safe = True
        self.handle = session.loop.call_later(FIRST, self._fire)

    def _fire(self):
        s = self.session
        self.handle = None
        if s.closing or s.progress is not self:
            return
        if self.safe:
            count = "NIL" if self.count is None else str(self.count)
            total = "NIL" if not self.total else str(self.total)
            if self.total and self.count is not None and self.count > self.total:
                count = total
            s.send(f'* OK [INPROGRESS ("{self.tag}" {count} {total})] still working'.encode())
            s.flush()
        self.handle = s.loop.call_later(EVERY, self._fire)

    def stop(self):
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.session.progress is self:
            self.session.progress = None


class _Off:
    __slots__ = ()

    def stop(self):
        pass


OFF = _Off()


def start(session, cmd):
    """A Progress for ``cmd`` if it is one that can take long; else OFF."""
    if cmd.verb not in VERBS:
        return OFF
    session.progress = Progress(session, cmd.tag)
    return session.progress
