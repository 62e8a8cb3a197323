"""Roost's store: accounts, mailboxes, messages, flags, threads and changes.

Owns the SQL metadata (SQLAlchemy Core), the Maildir++ message files, the one
delivery path and change notification. Imports no protocol module: its API is
shaped around mail, never around IMAP sequence numbers or JMAP method names.
"""
