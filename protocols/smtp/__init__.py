"""SMTP in all its roles (DESIGN.md sections 1 and 7a): the submission
listeners, the MX-facing edge, the outbound relay that delivers the queue,
and the services a Postfix in front of Roost uses (Dovecot-style SASL
authentication and socketmap lookups)."""
