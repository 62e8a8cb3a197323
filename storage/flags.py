"""Message flags: IMAP system flags as a bitmask, other keywords as text.

The store keeps a message's flags in a mailbox as ``(bits, keywords)``.
``bits`` holds the system flags below; ``keywords`` is a tuple of the other
flag names, case preserved, compared case-insensitively. Maildir info letters
mirror the system flags so plain Maildir tools can read the store.
"""

SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = 1, 2, 4, 8, 16

SYSTEM = {"\\seen": SEEN, "\\answered": ANSWERED, "\\flagged": FLAGGED,
          "\\deleted": DELETED, "\\draft": DRAFT}
SYSTEM_NAMES = {SEEN: "\\Seen", ANSWERED: "\\Answered", FLAGGED: "\\Flagged",
                DELETED: "\\Deleted", DRAFT: "\\Draft"}
# Maildir info letters must be in ASCII order in the file name.
MAILDIR_LETTERS = {DRAFT: "D", FLAGGED: "F", ANSWERED: "R", SEEN: "S", DELETED: "T"}
LETTER_BITS = {v: k for k, v in MAILDIR_LETTERS.items()}

MAX_KEYWORDS = 64
MAX_KEYWORD_LENGTH = 128


def split(names):
    """Split flag names into (bits, keywords); keywords de-duplicated case-insensitively."""
    bits = 0
    keywords = []
    seen = set()
    for name in names:
        bit = SYSTEM.get(name.lower())
        if bit:
            bits |= bit
        elif name.lower() not in seen and not name.startswith("\\"):
            seen.add(name.lower())
            keywords.append(name)
    return bits, tuple(keywords)


def names(bits, keywords):
    """The flag names of ``(bits, keywords)``, system flags first."""
    out = [SYSTEM_NAMES[b] for b in (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT) if bits & b]
    out.extend(keywords)
    return out


def encode_keywords(keywords):
    return " ".join(keywords)


def decode_keywords(text):
    return tuple(text.split()) if text else ()


def merge_keywords(old, add=(), remove=()):
    """``old`` with ``add`` appended and ``remove`` taken out, case-insensitively."""
    drop = {k.lower() for k in remove}
    out = [k for k in old if k.lower() not in drop]
    have = {k.lower() for k in out}
    for k in add:
        if k.lower() not in have and k.lower() not in drop:
            have.add(k.lower())
            out.append(k)
    return tuple(out)


def maildir_info(bits):
    return "".join(MAILDIR_LETTERS[b] for b in (DRAFT, FLAGGED, ANSWERED, SEEN, DELETED) if bits & b)


def bits_from_info(info):
    bits = 0
    for ch in info:
        bits |= LETTER_BITS.get(ch, 0)
    return bits
