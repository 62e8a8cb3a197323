"""The IMAP package keeps to its layer (DESIGN.md section 2): no SQLAlchemy,
no file access, no other protocol, and no second copy of the command list."""

import re
from pathlib import Path

import roost.protocols.imap as imap
from roost.protocols.imap import commands
from roost.protocols.imap.parser import PARSERS

SOURCES = sorted(Path(imap.__file__).parent.rglob("*.py"))


def test_no_sqlalchemy_no_files_no_other_protocol():
    assert len(SOURCES) > 5
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+sqlalchemy", text, re.M), path
        assert not re.search(r"\bopen\(", text), path
        assert not re.search(r"roost\.protocols\.(?!imap)\w+", text), path


def test_every_parsed_verb_has_a_handler():
    for verb in PARSERS:
        assert commands.lookup(verb) is not None, verb
