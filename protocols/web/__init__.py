"""HTTP resources served beside JMAP on the HTTP listener (DESIGN.md section 1:
protocols/web). Today: client set-up (``autoconfig``). ``roost.server``
mounts them on the JMAP site's root; nothing here imports another protocol.
"""

from .autoconfig import Server, mount

__all__ = ["Server", "mount"]
