"""Organisational domains (RFC 7489 section 3.2) from the Public Suffix List.

Which list: the first that exists of ``[inbound] public_suffix_list`` (a
path), Debian's ``/usr/share/publicsuffix/public_suffix_list.dat`` (package
``publicsuffix``, kept current by the distribution's updates), and the copy
inside the ``publicsuffix2`` wheel (a declared dependency, also needed by
``authheaders``). The wheel's copy is older (its release date is in its
version) but means ``pip install .`` works on a machine without the Debian
file; a suffix added since then only makes a domain's organisational domain
one label shorter, which errs on the side of relaxed alignment passing for
sibling domains under a new suffix. We read the file ourselves (the format
is small: rules, ``*.`` wildcards, ``!`` exceptions, ICANN and private
sections both used, as the DMARC and PSL documents say) rather than use
``publicsuffix2``'s lookup, so the algorithm is the PSL's own, in one page.
The list is loaded once per process (``default()``), about 10 ms.
"""

import os
import threading

DEBIAN = "/usr/share/publicsuffix/public_suffix_list.dat"


def _bundled():
    try:
        import publicsuffix2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(publicsuffix2.__file__), "public_suffix_list.dat")
    return path if os.path.exists(path) else None


class PublicSuffixList:
    def __init__(self, text):
        self.rules, self.wild, self.exceptions = set(), set(), set()
        for line in text.splitlines():
            rule = line.strip().split(" ")[0].lower()
            if not rule or rule.startswith("//"):
                continue
            try:
                rule = ".".join(label.encode("idna").decode("ascii") if not label.isascii()
                                else label for label in rule.split("."))
            except UnicodeError:
                continue
            if rule.startswith("!"):
                self.exceptions.add(rule[1:])
            elif rule.startswith("*."):
                self.wild.add(rule[2:])
            else:
                self.rules.add(rule)

    @classmethod
    def load(cls, path=None):
        for candidate in (path, DEBIAN, _bundled()):
            if candidate and os.path.exists(candidate):
                with open(candidate, encoding="utf-8") as f:
                    return cls(f.read())
        raise FileNotFoundError("no Public Suffix List (install publicsuffix2 or Debian's "
                                "publicsuffix, or set [inbound] public_suffix_list)")

    def public_suffix(self, domain):
        """The longest public suffix of ``domain`` (lower case, A-labels);
        an unlisted TLD is one (the PSL's default rule ``*``)."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in self.exceptions:
                return ".".join(labels[i + 1:])
            if candidate in self.rules:
                return candidate
            if i + 1 < len(labels) and ".".join(labels[i + 1:]) in self.wild:
                return candidate
        return labels[-1]

    def organisational(self, domain):
        """The organisational domain: the public suffix and one label more
        (the domain itself when it is a public suffix or shorter)."""
        domain = domain.lower().rstrip(".")
        suffix = self.public_suffix(domain)
        if domain == suffix:
            return domain
        labels = domain[:-len(suffix) - 1].split(".")
        return labels[-1] + "." + suffix


_default, _lock = None, threading.Lock()


def default(path=None):
    """The process's list (loaded on first use)."""
    global _default
    with _lock:
        if _default is None:
            _default = PublicSuffixList.load(path)
        return _default
