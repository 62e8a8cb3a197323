"""Roost's protocol front ends (LMTP, IMAP, JMAP, submission, ManageSieve).

Each turns bytes into typed requests, calls the store API and turns results
into bytes. None imports SQLAlchemy, opens files under the data directory or
imports another protocol's modules.
"""
