"""UIDONLY (RFC 9586): a connection that never sees message sequence numbers.

Once ``ENABLE UIDONLY`` has been given:

* FETCH, STORE, COPY, MOVE and SEARCH without the UID prefix, and a search
  key that is a sequence set, get ``BAD [UIDREQUIRED]`` (``refusal``);
* every FETCH response is ``* <uid> UIDFETCH (...)`` (``head``), without a
  UID item unless that is the only item asked for;
* expunges are reported as VANISHED, as under QRESYNC (the session's
  ``_report_expunges``).

EXISTS is still sent (it is a count, not a number of one message). SORT and
THREAD (RFC 5256) are refused here without UID the same way.
"""

SEQUENCE_VERBS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "THREAD"})


def on(s):
    return "UIDONLY" in s.enabled


def refusal(s, cmd):
    """The BAD text for a command that uses sequence numbers, or None."""
    if on(s) and not cmd.uid and cmd.verb in SEQUENCE_VERBS:
        return f"[UIDREQUIRED] UIDONLY is enabled: use UID {cmd.verb}"
    return None


def head(s, seq, uid):
    """The start of one message's FETCH response: ``* seq FETCH (`` or ``* uid UIDFETCH (``."""
    return b"* %d UIDFETCH (" % uid if on(s) else b"* %d FETCH (" % seq


def seq_ranges(s, view):
    """The search compiler's sequence-set callback: refused under UIDONLY
    (SEARCHRES ``$`` names UIDs and stays allowed)."""
    if not on(s):
        return view.seq_ranges

    def refuse(seqset):
        if seqset.saved:
            return view.seq_ranges(seqset)
        from .commands import Bad
        raise Bad("[UIDREQUIRED] UIDONLY is enabled: search by UID")
    return refuse
