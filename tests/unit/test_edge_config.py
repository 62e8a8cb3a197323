"""The ``[smtp]`` and ``[spam]`` tables (server.config): values of the wrong
kind are refused at start-up with the setting named."""

import pytest

from roost.server import config


def load(tmp_path, text):
    path = tmp_path / "roost.toml"
    path.write_text(text)
    return config.load(str(path))


def test_values(tmp_path):
    cfg = load(tmp_path, '[smtp]\ndnsbl = ["zen.example"]\ngreylist = true\ngreylist_delay = "2m"\n'
                         'pregreet = 1\n[spam]\nthreshold = 6\nrspamd = "http://127.0.0.1:11333"\n')
    assert cfg.smtp_dnsbl == ["zen.example"] and cfg.smtp_greylist is True
    assert cfg.smtp_pregreet == 1.0 and isinstance(cfg.smtp_pregreet, float)
    assert cfg.spam == {"threshold": 6, "rspamd": "http://127.0.0.1:11333"}
    assert config.load().smtp_greylist is False and config.load().listen["smtp"] == "off"


@pytest.mark.parametrize("text, words", [
    ("[smtp]\ngreylist = 1\n", "greylist"),
    ("[smtp]\ndnsbl = \"zen.example\"\n", "dnsbl"),
    ("[smtp]\ndnsbl_action = \"drop\"\n", "dnsbl_action"),
    ("[smtp]\ngreylist_delay = \"soon\"\n", "interval"),
    ("[smtp]\nconnections_per_ip = -1\n", "connections_per_ip"),
    ("[smtp]\nnope = 1\n", "nope"),
    ("[spam]\nthreshold = \"high\"\n", "threshold"),
    ("[spam]\nrspamd_url = \"x\"\n", "rspamd_url"),
])
def test_refused(tmp_path, text, words):
    with pytest.raises(ValueError, match=words):
        load(tmp_path, text)
