"""The IMAP package keeps to its layer (DESIGN.md section 2): no SQLAlchemy,
no file access, no other protocol, and no second copy of the command list.
Within it, imports go one way: the session uses the command modules, the
command modules never import the session."""

import ast
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
        # sasl: the pre-login gate the listeners that log clients in share
        assert not re.search(r"roost\.protocols\.(?!imap|sasl\b)\w+", text), path


def test_every_parsed_verb_has_a_handler():
    for verb in PARSERS:
        assert commands.lookup(verb) is not None, verb


def _imports(path, inside_functions=False):
    """The modules ``path`` imports, relative imports resolved; ``from X import y``
    gives both X and X.y (y may be a module: ``from .. import session``)."""
    package = "roost.protocols." + ".".join(path.relative_to(Path(imap.__file__).parent.parent)
                                            .with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree)
    if inside_functions:
        nodes = (n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def test_commands_never_import_the_session():
    modules = sorted((Path(imap.__file__).parent / "commands").glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        assert "roost.protocols.imap.session" not in _imports(path), path


def test_session_imports_the_commands_at_the_top_only():
    session = Path(imap.__file__).parent / "session.py"
    assert "roost.protocols.imap.commands" in _imports(session)
    late = [m for m in _imports(session, inside_functions=True)
            if m.startswith("roost.protocols.imap.commands")]
    assert late == []
