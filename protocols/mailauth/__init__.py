"""Mail authentication (DESIGN.md section 2): DKIM signing and ARC sealing of
outgoing mail, and SPF/DKIM/DMARC/ARC verification of incoming mail."""
