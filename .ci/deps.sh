#!/usr/bin/env bash
# System packages the test suite drives (real clients, MTA and peers for benchmarks).
# Tests that need one of these skip with a reason when it is missing locally.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="python3-venv postfix dovecot-imapd dovecot-lmtpd isync offlineimap3 neomutt fetchmail getmail6 swaks libmail-dkim-perl sieve-connect rspamd"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
# Postfix and Dovecot are started by the tests in temp directories, never as system services.
service postfix stop >/dev/null 2>&1 || true
service dovecot stop >/dev/null 2>&1 || true
