"""The repository's contracts that a script can check: packaging, layering,
the README's commands, the example configuration."""

import configparser
import pathlib
import re

from roost.server import cli, config

ROOT = pathlib.Path(__file__).resolve().parent.parent
CODE_DIRS = {"server": "roost.server", "protocols": "roost.protocols", "storage": "roost.storage",
             "conf": "roost.conf"}


def _setup_cfg():
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    return cp


def test_every_package_is_listed_and_mapped():
    cp = _setup_cfg()
    packages = set(cp["options"]["packages"].split())
    mapping = dict(line.split("=", 1) for line in cp["options"]["package_dir"].split("\n") if "=" in line)
    mapping = {k.strip(): v.strip() for k, v in mapping.items()}
    found = set()
    for directory, prefix in CODE_DIRS.items():
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory)
            name = ".".join([prefix, *rel.parts]) if rel.parts else prefix
            found.add(name)
            assert mapping.get(name) == str(init.parent.relative_to(ROOT)), name
    assert found and found == packages


def _python_files(directory):
    return [p for p in (ROOT / directory).rglob("*.py")]


def test_protocols_never_import_sqlalchemy_or_each_other():
    for path in _python_files("protocols"):
        source = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+sqlalchemy", source, re.M), path
        own = path.relative_to(ROOT / "protocols").parts[0]
        for other in re.findall(r"roost\.protocols\.(\w+)", source):
            # dns is the one resolver every protocol shares (DESIGN.md section 2);
            # smtpdata the DATA reader of LMTP, submission and the SMTP edge;
            # sasl what the listeners that log clients in share; linesession the
            # connection life of the two line-based servers, POP3 and ManageSieve
            assert other in (own, "dns", "smtpdata", "sasl", "linesession") or own.endswith(".py"), f"{path} imports protocol {other}"


def test_storage_imports_no_protocol():
    for path in _python_files("storage"):
        assert "roost.protocols" not in path.read_text(), path
        assert "roost.server" not in path.read_text(), path


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    commands = [b.strip() for b in blocks if "pytest" in b]
    assert len(commands) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci


def test_readme_start_command_uses_the_cli_contract():
    readme = (ROOT / "README.md").read_text()
    start = [b for b in re.findall(r"```sh\n(.*?)\n```", readme, re.S) if "serve" in b][0]
    args = start.split("roost", 2)[-1].split()
    parsed = cli.build_parser().parse_args(args)
    assert parsed.command == "serve" and parsed.demo and parsed.data == "./data"


def test_example_config_loads_and_matches_defaults():
    cfg = config.load(str(ROOT / "conf" / "roost.toml"))
    default = config.Config()
    assert cfg.listen == default.listen
    assert (cfg.max_message_size, cfg.dedupe_window, cfg.threads, cfg.processes) == \
        (default.max_message_size, default.dedupe_window, default.threads, default.processes)


def test_listener_addresses_are_validated():
    assert config.parse_address("off") is None
    assert config.parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert config.parse_address("[::1]:143") == ("::1", 143)
    for bad in ("localhost", "1.2.3.4:99999", "x:y"):
        try:
            config.parse_address(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def _private_names(cls, instance_attrs):
    names = {n for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
    return names | set(instance_attrs)


def test_nothing_outside_the_store_calls_its_private_helpers():
    """The store's public boundary: ``Store`` and its write transaction are
    used through their public API only (``self._x`` inside their own classes
    is theirs); every module, test and benchmark keeps to it."""
    import ast

    from roost.storage.store import Store
    from roost.storage.txn import Txn
    private = _private_names(Store, {"_wlock"}) | _private_names(Txn, {"_sql", "_hooks", "_rows", "_events"})
    assert {"_read_blob", "_wlock", "_rows"} <= private
    found = []
    for directory in ("server", "protocols", "storage", "tests", "bench"):
        for path in _python_files(directory):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and node.attr in private and \
                        not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not found, found


def test_one_flag_rule_and_one_delivery_entry():
    """Flags change only in ``storage.messages.apply_flags`` (the flag columns
    are written by ``storage.hot.write_flags`` alone), and every ingest calls
    ``Delivery.store``: no module outside the store writes message rows or
    calls the committer directly."""
    writers = {}
    for directory in ("server", "protocols", "storage"):
        for path in _python_files(directory):
            text = path.read_text()
            for pattern in (r"SET flags\b", r"\.values\(flags=", r"insert_messages\(", r"committer\.submit\("):
                if re.search(pattern, text):
                    writers.setdefault(pattern, set()).add(path.name)
    assert writers[r"SET flags\b"] == {"hot.py"}
    assert r"\.values\(flags=" not in writers
    assert writers[r"insert_messages\("] == {"hot.py", "messages.py", "delivery.py", "fsck.py"}
    assert writers[r"committer\.submit\("] == {"delivery.py"}
