"""Data only: the example configuration and the client set-up templates that
``roost.protocols.web`` serves (a package so both ``pip install .`` and
``pip install -e .`` carry them)."""
