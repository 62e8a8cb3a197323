"""Each account's Sieve scripts (storage.sieve.scripts) on a real SQLite
store: create, replace, rename, activate, delete, quotas, invalid scripts."""

import pytest
from roost.storage.errors import Conflict, InvalidName, QuotaExceeded
from roost.storage.sieve import SieveError, compile
from roost.storage.sieve import scripts as sv
from roost.storage.store import Store

KEEP = 'require ["fileinto"];\nif header :contains "subject" "x" { fileinto "X"; }\n'


@pytest.fixture
def store(tmp_path):
    s = Store.open(str(tmp_path / "data"))
    s.add_account("alice@local.test")
    s.add_account("bob@local.test")
    yield s
    s.close()


def ids(store):
    return store.account("alice@local.test").id, store.account("bob@local.test").id


def test_put_list_activate_rename_delete(store):
    a, b = ids(store)
    first = sv.put_script(store, a, "one", KEEP)
    assert not first.active and sv.active_script(store, a) is None
    sv.put_script(store, a, "two", "keep;\n", activate=True)
    assert sv.active_script(store, a).name == "two"
    sv.activate(store, a, "one")
    assert [(s.name, s.active) for s in sv.list_scripts(store, a)] == [("one", True), ("two", False)]
    assert sv.list_scripts(store, b) == []              # another account sees nothing
    with pytest.raises(sv.ScriptActive):
        sv.delete_script(store, a, "one")
    sv.rename_script(store, a, "one", "uno")
    assert sv.active_script(store, a).name == "uno"
    with pytest.raises(Conflict):
        sv.rename_script(store, a, "uno", "two")
    sv.activate(store, a, None)
    assert sv.active_script(store, a) is None
    sv.delete_script(store, a, "uno")
    with pytest.raises(sv.ScriptNotFound):
        sv.get_script(store, a, "uno")
    replaced = sv.put_script(store, a, "two", KEEP)
    assert replaced.content == KEEP and replaced.created <= replaced.updated


def test_invalid_scripts_and_names_are_refused(store):
    a, _b = ids(store)
    with pytest.raises(SieveError) as err:
        sv.put_script(store, a, "bad", 'require ["fileinto"];\nif true {\n  fileinto2 "A";\n}\n')
    assert err.value.line == 3
    assert sv.list_scripts(store, a) == []
    for name in ("", "a\x00b", "x" * 256, "tab\there"):
        with pytest.raises(InvalidName):
            sv.put_script(store, a, name, "keep;")
    with pytest.raises(SieveError):
        compile("x" * (70 * 1024))


def test_quota_on_count_and_size(store):
    a, _b = ids(store)
    for i in range(sv.MAX_SCRIPTS):
        sv.put_script(store, a, f"s{i}", "keep;")
    with pytest.raises(QuotaExceeded):
        sv.put_script(store, a, "one more", "keep;")
    sv.put_script(store, a, "s0", "discard;")            # replacing one still fits
    with pytest.raises(QuotaExceeded):
        sv.check_space(store, a, "s1", sv.MAX_SCRIPT_SIZE + 1)


def test_changes_are_logged(store):
    a, _b = ids(store)
    before = store.state(a, "SieveScript")
    s = sv.put_script(store, a, "one", "keep;")
    assert store.state(a, "SieveScript") != before
    assert sv.mark_notified(store, a, s.id, "e1") is True
    assert sv.mark_notified(store, a, s.id, "e1") is False   # told once
    assert sv.mark_notified(store, a, s.id, "e2") is True
