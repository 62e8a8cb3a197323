"""``roost queue`` and ``roost suppression`` against a data directory with
queued mail (DESIGN.md section 8)."""

import email
import json

from tests.conftest import roost as run, stored_messages
from tests.crash.test_relay_crash import queue


class Out:
    def __init__(self, proc):
        self.stdout = proc.stdout.decode()
        self.returncode = proc.returncode


def roost(data, *args, check=True):
    return Out(run(data, *args, check=check))


def test_queue_list_show_hold_release_retry_fail_drop(tmp_path):
    data = tmp_path / "data"
    first, second = queue(data, "bob@remote.test", "carol@remote.test")
    listed = [json.loads(line) for line in roost(data, "queue", "list", "--json").stdout.splitlines()]
    assert [m["id"] for m in listed] == [first, second]
    assert listed[0]["recipients"] == {"queued": 1}
    shown = roost(data, "queue", "show", str(first)).stdout
    assert "rcpt: <bob@remote.test> queued attempts=0" in shown
    roost(data, "queue", "hold", str(first))
    assert " held" in roost(data, "queue", "list").stdout.splitlines()[0]
    roost(data, "queue", "release", str(first))
    assert " held" not in roost(data, "queue", "list").stdout
    roost(data, "queue", "retry", str(first))
    roost(data, "queue", "fail", str(first))
    [dsn] = [email.message_from_bytes(m) for m in stored_messages(data, "alice@local.test")]
    assert "bob@remote.test" in dsn.get_payload()[1].as_string()
    roost(data, "queue", "drop", str(second))
    assert roost(data, "queue", "list").stdout == ""
    assert roost(data, "queue", "show", str(second), check=False).returncode == 65
    assert roost(data, "queue", "drop", "99", check=False).returncode == 65
    assert roost(data, "queue", "show", check=False).returncode == 64


def test_hold_rules_from_the_command_line(tmp_path):
    data = tmp_path / "data"
    queue(data)
    roost(data, "queue", "hold", "--domain", "Remote.test")
    (held,) = queue(data, "bob@remote.test")
    assert "held: True" in roost(data, "queue", "show", str(held)).stdout
    roost(data, "queue", "release", "--domain", "remote.test")
    (free,) = queue(data, "bob@remote.test")
    assert "held: False" in roost(data, "queue", "show", str(free)).stdout
    assert roost(data, "queue", "release", "--domain", "remote.test", check=False).returncode == 65


def test_suppression_add_list_del(tmp_path):
    data = tmp_path / "data"
    queue(data)
    roost(data, "suppression", "add", "Bob@Remote.test")
    assert roost(data, "suppression", "list").stdout.startswith("bob@remote.test\t")
    roost(data, "suppression", "del", "bob@remote.test")
    assert roost(data, "suppression", "list").stdout == ""
    assert roost(data, "suppression", "del", "bob@remote.test", check=False).returncode == 65
