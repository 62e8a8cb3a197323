"""Roost's application layer: configuration, command line, auth and wiring.

The only package that imports both ``roost.storage`` and ``roost.protocols``.
"""
