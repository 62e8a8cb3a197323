"""Mail authentication (DESIGN.md section 2): DKIM signing (``dkim``) and ARC
sealing (``arc``) of outgoing mail; SPF/DKIM/DMARC/ARC verification of
incoming mail (``verify``, with organisational domains from ``psl``), the
inbound pipeline and its Authentication-Results header (``inbound``), and
DMARC aggregate reports (``reports``). Every DNS lookup goes through
``roost.protocols.dns.Resolver``."""
