"""Configuration: defaults, ``roost.toml``, environment and command-line flags.

Precedence, lowest first: built-in defaults, the TOML file (``--config``),
``ROOST_DATA``, then flags. ``conf/roost.toml`` documents every setting.
"""

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field

DEFAULT_LISTEN = {
    "imap": "127.0.0.1:1143",
    "imaps": "127.0.0.1:1993",
    "lmtp": "127.0.0.1:2424",
    "jmap": "127.0.0.1:8080",
    "submission": "127.0.0.1:1587",
    "submissions": "127.0.0.1:1465",
    "smtp": "off",
    "managesieve": "127.0.0.1:4190",
    "pop3": "127.0.0.1:1110",
    "pop3s": "127.0.0.1:1995",
    "auth": "off",
    "socketmap": "off",
    "metrics": "off",
}


@dataclass
class Config:
    data: str = "./data"
    database: str = ""
    hostname: str = "localhost"
    listen: dict = field(default_factory=lambda: dict(DEFAULT_LISTEN))
    max_message_size: int = 50 * 1024 * 1024
    dedupe_window: int = 24 * 3600
    history_days: int = 60
    connections_per_user_ip: int = 50
    unauthenticated_connections_per_ip: int = 10
    unauthenticated_connections: int = 200
    unauthenticated_command_timeout: float = 60
    threads: int = 32            # per process, for blocking work (database, fsync)
    processes: int = 0           # worker processes; 0: one per core
    tls_cert: str = ""
    tls_key: str = ""
    log_level: str = "info"      # server/logs.py LEVELS
    log_format: str = "kv"       # "kv" or "json"
    log_file: str = ""           # empty: stderr
    jmap_allowed_origins: list = field(default_factory=list)
    jmap_push_allow_private: bool = False
    jmap_undo_send: int = 0      # seconds a JMAP submission may still be canceled
    dns_nameservers: list = field(default_factory=list)
    ntp_server: str = "pool.ntp.org"
    trusted_proxies: list = field(default_factory=list)
    hash_threads: int = 2
    hash_queue: int = 16
    max_login_delay: float = 15
    relay_ca_file: str = ""      # CA bundle for MTA-STS policy fetches; empty: the system's
    relay_schedule: list = field(default_factory=lambda: ["5m", "10m", "30m", "1h", "2h", "4h",
                                                          "8h", "16h"])
    relay_max_age: str = "5d"
    relay_delay_notice: str = "4h"
    relay_suppress_for: str = "30d"
    relay_mx_port: int = 25
    relay_smarthost: str = ""     # HOST:PORT; empty: deliver to each domain's MX
    relay_smarthost_user: str = ""
    relay_smarthost_password: str = ""
    relay_smarthost_tls: str = "starttls"   # starttls, tls (implicit) or none
    relay_connections: int = 20   # outgoing SMTP connections in all
    relay_per_domain: int = 4     # ... and to one destination domain
    relay_helo: str = ""          # empty: [server] hostname
    relay_timeout: float = 60     # seconds per SMTP reply (the DATA end gets 5 times that)
    managesieve_loopback_cleartext: bool = True  # AUTHENTICATE without TLS over loopback
    pop3_loopback_cleartext: bool = True         # USER/PASS and AUTH without TLS over loopback
    submission_save_sent: bool = True          # a copy in the sender's Sent mailbox
    submission_loopback_cleartext: bool = True  # AUTH without TLS over loopback, as IMAP
    submission_messages_per_minute: int = 30    # per account; 0: no limit
    submission_messages_per_hour: int = 300
    submission_messages_per_day: int = 1000
    submission_recipients_per_message: int = 100
    submission_recipients_per_day: int = 2000
    submission_max_hold: str = "7d"            # FUTURERELEASE: the longest HOLDFOR/HOLDUNTIL
    inbound_lmtp_verdicts: str = "received"    # or "skip" (the MTA adds its own verdicts)
    inbound_authserv_id: str = ""              # empty: [server] hostname
    inbound_timeout: float = 10.0              # seconds for one message's DNS lookups
    inbound_public_suffix_list: str = ""       # empty: Debian's file, else publicsuffix2's copy
    inbound_dmarc_reports: bool = False        # daily DMARC aggregate reports (RFC 7489 7.2)
    inbound_report_from: str = ""              # their From and envelope sender; empty: postmaster@hostname
    # [smtp]: the MX-facing edge (protocols.smtp.edge.Policy documents each)
    smtp_pregreet: float = 2.0
    smtp_dnsbl: list = field(default_factory=list)
    smtp_dnsbl_action: str = "reject"          # or "score"
    smtp_require_fcrdns: bool = False
    smtp_greylist: bool = False
    smtp_greylist_delay: str = "5m"
    smtp_greylist_retry_window: str = "2d"
    smtp_greylist_allow_after: int = 5         # passed triplets before a network is allowed
    smtp_greylist_allow_for: str = "35d"
    smtp_connections_per_ip: int = 10
    smtp_connections_per_network: int = 50
    smtp_connections_total: int = 500
    smtp_messages_per_minute: int = 60
    smtp_network_messages_per_minute: int = 300
    smtp_recipients_per_minute: int = 300
    smtp_recipients_per_message: int = 100
    smtp_commands_before_mail: int = 20
    smtp_timeout: float = 300.0
    smtp_lifetime: float = 1800.0
    # [spam]: protocols.mailauth.spam
    spam: dict = field(default_factory=dict)

    @property
    def database_url(self):
        return self.database or f"sqlite:///{os.path.join(self.data, 'roost.db')}"


# Listeners that also take an absolute path: a unix socket, ``(path, None)``.
UNIX_LISTENERS = ("auth", "socketmap")


def parse_address(value):
    """``"host:port"`` -> ``(host, port)``; ``"off"`` -> None; an absolute
    path -> ``(path, None)`` (see ``check_listener``)."""
    if value is None or str(value).lower() in ("off", "", "none"):
        return None
    if str(value).startswith("/"):
        return str(value), None
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listener address must be HOST:PORT or off, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_listener(name, value):
    """``parse_address(value)``, refusing a socket path for a listener not in
    ``UNIX_LISTENERS``; raises ValueError."""
    addr = parse_address(value)
    if addr is not None and addr[1] is None and name not in UNIX_LISTENERS:
        raise ValueError(f"the {name} listener takes HOST:PORT or off, not a path: {value!r}")
    return addr


def load(path=None, data=None):
    cfg = Config()
    if path:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        server = doc.get("server", {})
        limits = doc.get("limits", {})
        tls = doc.get("tls", {})
        logs = doc.get("log", {})
        cfg.data = server.get("data", cfg.data)
        cfg.database = server.get("database", cfg.database)
        cfg.hostname = server.get("hostname", cfg.hostname)
        # "workers" was the thread pool's name before there were worker processes.
        cfg.threads = int(server.get("threads", server.get("workers", cfg.threads)))
        cfg.processes = int(server.get("processes", cfg.processes))
        cfg.listen.update({k: str(v) for k, v in doc.get("listen", {}).items()})
        cfg.max_message_size = int(limits.get("max_message_size", cfg.max_message_size))
        cfg.dedupe_window = int(limits.get("dedupe_window", cfg.dedupe_window))
        cfg.history_days = int(limits.get("history_days", cfg.history_days))
        cfg.connections_per_user_ip = int(limits.get("connections_per_user_ip",
                                                     cfg.connections_per_user_ip))
        for name in ("unauthenticated_connections_per_ip", "unauthenticated_connections"):
            setattr(cfg, name, int(limits.get(name, getattr(cfg, name))))
        cfg.unauthenticated_command_timeout = float(limits.get(
            "unauthenticated_command_timeout", cfg.unauthenticated_command_timeout))
        cfg.tls_cert = tls.get("cert", cfg.tls_cert)
        cfg.tls_key = tls.get("key", cfg.tls_key)
        cfg.log_level = str(logs.get("level", cfg.log_level)).lower()
        cfg.log_format = str(logs.get("format", cfg.log_format)).lower()
        cfg.log_file = logs.get("file", cfg.log_file)
        jmap = doc.get("jmap", {})
        origins = jmap.get("allowed_origins", cfg.jmap_allowed_origins)
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ValueError("[jmap] allowed_origins must be a list of origins "
                             '(like "https://mail.example.org")')
        cfg.jmap_allowed_origins = origins
        allow_private = jmap.get("push_allow_private", cfg.jmap_push_allow_private)
        if not isinstance(allow_private, bool):
            raise ValueError("[jmap] push_allow_private must be true or false")
        cfg.jmap_push_allow_private = allow_private
        undo = jmap.get("undo_send", cfg.jmap_undo_send)
        if isinstance(undo, bool) or not isinstance(undo, int) or not 0 <= undo <= 3600:
            raise ValueError("[jmap] undo_send must be a number of seconds from 0 to 3600")
        cfg.jmap_undo_send = undo
        cfg.dns_nameservers = [str(n) for n in doc.get("dns", {}).get("nameservers",
                                                                        cfg.dns_nameservers)]
        cfg.ntp_server = str(doc.get("doctor", {}).get("ntp", cfg.ntp_server))
        auth = doc.get("auth", {})
        cfg.trusted_proxies = [str(p) for p in auth.get("trusted_proxies", cfg.trusted_proxies)]
        cfg.hash_threads = max(1, int(auth.get("hash_threads", cfg.hash_threads)))
        cfg.hash_queue = max(0, int(auth.get("hash_queue", cfg.hash_queue)))
        cfg.max_login_delay = float(auth.get("max_login_delay", cfg.max_login_delay))
        relay = doc.get("relay", {})
        cfg.relay_ca_file = str(relay.get("ca_file", cfg.relay_ca_file))
        for key in ("schedule", "max_age", "delay_notice", "suppress_for", "mx_port", "smarthost",
                    "smarthost_user", "smarthost_password", "smarthost_tls", "connections",
                    "per_domain", "helo", "timeout"):
            if key in relay:
                default = getattr(cfg, "relay_" + key)
                value = relay[key]
                setattr(cfg, "relay_" + key, [str(v) for v in value] if isinstance(default, list)
                        else type(default)(value))
        _load_submission(cfg, doc.get("submission", {}))
        _load_inbound(cfg, doc.get("inbound", {}))
        sieve_table = doc.get("managesieve", {})
        if set(sieve_table) - {"loopback_cleartext"} or \
                not isinstance(sieve_table.get("loopback_cleartext", True), bool):
            raise ValueError("[managesieve] has one setting: loopback_cleartext = true|false")
        cfg.managesieve_loopback_cleartext = sieve_table.get("loopback_cleartext", True)
        pop3_table = doc.get("pop3", {})
        if set(pop3_table) - {"loopback_cleartext"} or \
                not isinstance(pop3_table.get("loopback_cleartext", True), bool):
            raise ValueError("[pop3] has one setting: loopback_cleartext = true|false")
        cfg.pop3_loopback_cleartext = pop3_table.get("loopback_cleartext", True)
        _load_smtp(cfg, doc.get("smtp", {}))
        _load_spam(cfg, doc.get("spam", {}))
    if os.environ.get("ROOST_DATA"):
        cfg.data = os.environ["ROOST_DATA"]
    if data:
        cfg.data = data
    for name, value in cfg.listen.items():
        check_listener(name, value)  # fail early on a bad address
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"[log] level must be debug, info, warning or error, not {cfg.log_level!r}")
    if cfg.log_format not in ("kv", "json"):
        raise ValueError(f"[log] format must be kv or json, not {cfg.log_format!r}")
    from roost.storage.outbound import parse_interval
    for value in cfg.relay_schedule + [cfg.relay_max_age, cfg.relay_delay_notice,
                                       cfg.relay_suppress_for, cfg.submission_max_hold]:
        parse_interval(value)   # fail early: "[relay] ... an interval is ..."
    if cfg.relay_smarthost_tls not in ("starttls", "tls", "none"):
        raise ValueError("[relay] smarthost_tls must be starttls, tls or none")
    if cfg.relay_smarthost:
        parse_address(cfg.relay_smarthost)
    for proxy in cfg.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(f"[auth] trusted_proxies: not an address or network: {proxy!r}") from None
    return cfg


def _load_table(cfg, section, table, seconds=None):
    """Settings ``[section] key = value`` into ``cfg.<section>_<key>``, each of
    its default's type: booleans true or false, counts whole numbers >= 0
    (0: no limit), lists of strings, strings; numbers of seconds (float
    defaults) from 0 up to ``seconds`` when given."""
    for key, value in table.items():
        name = f"{section}_{key}"
        if not hasattr(cfg, name):
            raise ValueError(f"[{section}] has no setting {key!r}")
        default = getattr(cfg, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
            want = "a list of strings"
        elif isinstance(default, int):
            ok, want = number and value == int(value) and value >= 0, "a whole number >= 0 (0: no limit)"
            value = int(value) if ok else value
        elif isinstance(default, float):
            ok = number and value >= 0 and (seconds is None or 0 < value <= seconds)
            want = f"a number of seconds from 0 to {seconds}" if seconds else "a number >= 0"
            value = float(value) if ok else value
        else:
            ok, want, value = True, "", str(value)
        if not ok:
            raise ValueError(f"[{section}] {key} must be {want}")
        setattr(cfg, name, value)


def _load_submission(cfg, table):
    _load_table(cfg, "submission", table)


def _load_inbound(cfg, table):
    """The ``[inbound]`` table (verdicts on incoming mail, DMARC reports)."""
    _load_table(cfg, "inbound", table, seconds=60)
    if cfg.inbound_lmtp_verdicts not in ("received", "skip"):
        raise ValueError('[inbound] lmtp_verdicts must be "received" or "skip"')


def _load_smtp(cfg, table):
    """The ``[smtp]`` table (the MX-facing edge)."""
    from roost.storage.outbound import parse_interval
    _load_table(cfg, "smtp", table)
    if cfg.smtp_dnsbl_action not in ("reject", "score"):
        raise ValueError('[smtp] dnsbl_action must be "reject" or "score"')
    for key in ("greylist_delay", "greylist_retry_window", "greylist_allow_for"):
        parse_interval(getattr(cfg, "smtp_" + key))


def _load_spam(cfg, table):
    """The ``[spam]`` table: threshold, rspamd (URL), spamd (HOST:PORT), timeout."""
    allowed = {"threshold": (int, float), "rspamd": str, "spamd": str, "timeout": (int, float),
               "enabled": bool}
    for key, value in table.items():
        if key not in allowed:
            raise ValueError(f"[spam] has no setting {key!r}")
        if not isinstance(value, allowed[key]) or (isinstance(value, bool) and key != "enabled"):
            raise ValueError(f"[spam] {key} has the wrong type")
    cfg.spam = dict(table)
