"""The VacationResponse as a generated Sieve script (storage.sieve.vacation) on
a real SQLite store: the script it writes, reading it back, activation next
to the user's own script, and migration of the old ``vacations`` rows."""

import json

import pytest
from sqlalchemy import insert, select

from roost.storage.schema import vacations
from roost.storage.sieve import compile, scripts, vacation
from roost.storage.store import Store

AWAY = {"isEnabled": True, "fromDate": "2026-12-01T00:00:00Z", "toDate": "2026-12-08T12:30:00Z",
        "subject": 'Away "for now"', "textBody": "Back on the 8th.\nAsk \\ Bob.", "htmlBody": None}


@pytest.fixture
def store(tmp_path):
    s = Store.open(str(tmp_path / "data"))
    s.add_account("alice@local.test")
    yield s
    s.close()


def alice(store):
    return store.account("alice@local.test").id


def test_script_text_compiles_and_says_what_was_asked():
    text = vacation.script_for(AWAY)
    compile(text)
    assert 'require ["vacation", "date", "relational"];' in text
    assert 'currentdate :zone "+0000" :value "ge" "iso8601" "2026-12-01T00:00:00"' in text
    assert 'currentdate :zone "+0000" :value "lt" "iso8601" "2026-12-08T12:30:00"' in text
    assert ':days 7 :subject "Away \\"for now\\""' in text
    assert '"Back on the 8th.\nAsk \\\\ Bob."' in text
    assert vacation.settings_of(text) == AWAY


def test_html_uses_mime_and_undated_needs_no_date_extension():
    text = vacation.script_for({**AWAY, "fromDate": None, "toDate": None,
                                "htmlBody": "<p>Back <b>soon</b></p>"})
    compile(text)
    assert 'require ["vacation"];' in text and "currentdate" not in text
    assert ":mime" in text and "multipart/alternative" in text and "text/html" in text
    html_only = vacation.script_for({**AWAY, "textBody": None, "htmlBody": "<p>x</p>"})
    compile(html_only)
    assert "multipart" not in html_only and "Content-Type: text/html" in html_only
    off = vacation.script_for({**AWAY, "isEnabled": False})
    compile(off)
    assert "vacation :" not in off and off.rstrip().endswith("keep;")


def test_save_get_and_activation_next_to_the_users_script(store):
    a = alice(store)
    assert vacation.get(store, a) == vacation.defaults()
    scripts.put_script(store, a, "filters", "keep;", activate=True)
    state = store.state(a, "VacationResponse")
    vacation.save(store, a, AWAY)
    assert store.state(a, "VacationResponse") != state
    assert vacation.get(store, a) == AWAY
    assert scripts.active_script(store, a).name == "vacation"
    vacation.save(store, a, {**AWAY, "isEnabled": False})
    assert scripts.active_script(store, a).name == "filters"      # the user's script is back
    assert vacation.get(store, a) == {**AWAY, "isEnabled": False}
    # enabled but another script made active (ManageSieve): reported as off
    vacation.save(store, a, AWAY)
    scripts.activate(store, a, "filters")
    assert vacation.get(store, a)["isEnabled"] is False


def test_migration_of_old_rows(store):
    a = alice(store)
    old = {"isEnabled": True, "subject": "Gone", "textBody": "fishing", "fromDate": "garbage"}
    with store.write() as txn:
        txn.conn.execute(insert(vacations).values(account_id=a, settings=json.dumps(old)))
    assert vacation.migrate(store) == 1
    got = vacation.get(store, a)
    assert got["isEnabled"] is True and got["subject"] == "Gone" and got["textBody"] == "fishing"
    assert got["fromDate"] is None                   # unreadable date dropped, the rest kept
    assert scripts.active_script(store, a).name == "vacation"
    with store.reader() as conn:
        assert conn.execute(select(vacations)).all() == []
    assert vacation.migrate(store) == 0              # once


def test_the_users_script_is_included_when_the_interpreter_can(monkeypatch):
    monkeypatch.setattr(vacation, "EXTENSIONS", ("vacation", "date", "relational", "include"))
    text = vacation.script_for({**AWAY, "previous": 'my "filters"'})
    assert 'require ["vacation", "date", "relational", "include"];' in text
    assert text.endswith('include :personal :optional "my \\"filters\\"";\r\n')
    monkeypatch.setattr(vacation, "EXTENSIONS", ())
    assert "include" not in vacation.script_for({**AWAY, "previous": "filters"}).split("\r\n", 3)[3]
