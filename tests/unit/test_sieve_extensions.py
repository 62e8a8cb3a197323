"""Sieve extensions, each through its RFC's example scripts run against
messages (written here, or from ../shared/corpus for body and MIME), asserting
the actions: variables, relational, subaddress, regex, body, date/index,
editheader, mime/foreverypart/extracttext, environment, ihave, enotify,
spamtest/virustest, mailbox, include, duplicate, special-use,
vacation-seconds."""

import os
import time

import pytest
from roost.storage import mime
from roost.storage.sieve import SieveError, compile, run
from roost.storage.sieve.actions import (Context, FileInto, Hooks, Keep, Notify, Redirect,
                                         Reject, Vacation)

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "corpus")


def corpus(path):
    full = os.path.join(CORPUS, path)
    if not os.path.exists(full):
        pytest.skip(f"corpus message {path} not present")
    with open(full, "rb") as f:
        return f.read()


def msg(*lines, body="body\r\n"):
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def go(script, data, **kw):
    return run(compile(script), Context(data=data, **kw))


# --- variables (RFC 5229) -----------------------------------------------------

def test_variables_set_and_modifiers():
    o = go('require ["variables", "vacation"];\nset "honorific"  "Mr";\n'
           'set "first_name" "Wile";\nset "last_name"  "Coyote";\n'
           'set "vacation" text:\nDear ${HONORIFIC} ${last_name},\n'
           'I\'m out, please leave a message after the meep.\n.\n;\n'
           'vacation "${vacation}";', msg("Subject: x"))
    assert o.actions[0].reason == ("Dear Mr Coyote,\n"
                                   "I'm out, please leave a message after the meep.\n")
    script = ('require ["variables", "fileinto"];\nset "a" "juMBlEd lETteRS";\n'
              'set :length "b" "${a}";\nfileinto "${b}";\n'
              'set :lower "b" "${a}";\nfileinto "${b}";\n'
              'set :upperfirst "b" "${a}";\nfileinto "${b}";\n'
              'set :upperfirst :lower "b" "${a}";\nfileinto "${b}";\n'
              'set :quotewildcard "b" "Rock*";\nfileinto "${b}";\n')
    o = go(script, msg("Subject: x"))
    assert [a.mailbox for a in o.actions] == ["15", "jumbled letters", "JuMBlEd lETteRS",
                                              "Jumbled letters", "Rock\\*"]
    # unknown variables are empty, broken references stay as written
    o = go('require ["variables", "fileinto"]; fileinto "a${nope}b${}c${x";', msg("S: x"))
    assert o.actions == [FileInto("ab${}c${x")]
    with pytest.raises(SieveError) as e:
        compile('require "variables";\n\nset "x" "${env.foo}";')
    assert e.value.line == 3


def test_match_variables_rfc5229_examples():
    script = ('require ["fileinto", "variables"];\n'
              'if header :matches "List-ID" "*<*@*" {\n'
              '    fileinto "INBOX.lists.${2}"; stop;\n}\n'
              '# Imagine the header\n# Subject: [acme-users] [fwd] version 1.0 is out\n'
              'if header :matches "Subject" "[*] *" {\n'
              '    # ${1} will hold "acme-users",\n'
              '    # ${2} will hold "[fwd] version 1.0 is out"\n'
              '    fileinto "INBOX.lists.${1}"; stop;\n}\n'
              '# Imagine the header\n# To: coyote@ACME.Example.COM\n'
              'if address :matches ["To", "Cc"] ["coyote@**.com",\n'
              '        "wile@**.com"] {\n'
              '    # ${0} is the matching address\n    # ${1} is always the empty string\n'
              '    # ${2} is part of the domain name ("ACME.Example")\n'
              '    fileinto "INBOX.business.${2}"; stop;\n} else {\n}\n'
              'if anyof (true, address :domain :matches "To" "*.com") {\n    stop;\n}\n')
    s = compile(script)
    o = run(s, Context(data=msg("List-ID: Acme <acme-users@lists.example.org>")))
    assert o.actions == [FileInto("INBOX.lists.acme-users")]
    o = run(s, Context(data=msg("Subject: [acme-users] [fwd] version 1.0 is out")))
    assert o.actions == [FileInto("INBOX.lists.acme-users")]
    o = run(s, Context(data=msg("To: coyote@ACME.Example.COM")))
    assert o.actions == [FileInto("INBOX.business.ACME.Example")]
    o = run(s, Context(data=msg("To: other@example.net")))
    assert o.actions == [] and o.keep
    # section 5: string test
    o = go('require ["variables", "fileinto"];\nset "state" "${state} pending";\n'
           'if string :matches " ${state} " "* pending *" {\n  fileinto "ok";\n}',
           msg("S: x"))
    assert o.actions == [FileInto("ok")]
    o = go('require ["variables", "fileinto", "regex"];\n'
           'if header :regex "subject" "^(re|fwd): *([a-z]+) ([0-9]+)$" {'
           ' fileinto "${2}-${3}-${0}"; }', msg("Subject: RE: ticket 42"))
    assert o.actions == [FileInto("ticket-42-RE: ticket 42")]


# --- relational (RFC 5231) --------------------------------------------------------

REL_MSG = msg("Received: ...", "Received: ...", "Subject: example",
              "To: foo@example.com, baz@example.com", "CC: qux@example.com", "X-Priority: 2")


@pytest.mark.parametrize("test,expected", [
    ('address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', True),
    ('anyof ( address :count "ge" :comparator "i;ascii-numeric" ["to"] ["3"],\n'
     ' address :count "ge" :comparator "i;ascii-numeric" ["cc"] ["3"] )', False),
    ('header :count "ge" :comparator "i;ascii-numeric" ["received"] ["3"]', False),
    ('header :count "ge" :comparator "i;ascii-numeric" ["received"] ["2"]', True),
    ('address :count "ge" :comparator "i;ascii-casemap" ["to", "cc"] ["10"]', True),
    ('header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"]', True),
    ('header :value "gt" ["subject"] ["example"]', False),
    ('header :value "ne" :comparator "i;ascii-numeric" "x-priority" ["2", "3"]', True),
    ('header :value "eq" :comparator "i;ascii-numeric" "x-none" "0"', False),
    ('header :count "eq" :comparator "i;ascii-numeric" "x-none" "0"', True),
])
def test_relational_rfc5231(test, expected):
    o = go('require ["relational", "comparator-i;ascii-numeric", "fileinto"];\n'
           f'if {test} {{ fileinto "hit"; }}', REL_MSG)
    assert (o.actions == [FileInto("hit")]) is expected


def test_ascii_numeric_comparator():
    s = ('require "comparator-i;ascii-numeric";\n'
         'if header :is :comparator "i;ascii-numeric" "x-n" "0042" { discard; }')
    assert not go(s, msg("X-N: 42abc")).keep
    assert go(s, msg("X-N: 41")).keep
    # strings without digits are equal to each other (positive infinity)
    assert not go(s.replace("0042", "x"), msg("X-N: y")).keep


# --- subaddress (RFC 5233), envelope --------------------------------------------

def test_subaddress_rfc5233():
    script = ('require ["envelope", "subaddress", "fileinto"];\n'
              'if envelope :user "to" "postmaster" {\n  fileinto "inbox.postmaster";\n  stop;\n}\n'
              'if envelope :detail :is "to" "mta-filters" {\n'
              '  fileinto "inbox.ietf-mta-filters";\n  stop;\n}\n'
              'if envelope :detail :is "to" "" {\n  fileinto "inbox.empty-detail";\n  stop;\n}\n'
              'if address :detail :matches "to" "*" {\n  fileinto "inbox.${0}";\n}\n')
    s = compile(script.replace('"inbox.${0}"', '"inbox.has-detail"'))
    cases = {"postmaster+x@example.org": "inbox.postmaster",
             "ken+mta-filters@example.org": "inbox.ietf-mta-filters",
             "ken+@example.org": "inbox.empty-detail"}
    for rcpt, box in cases.items():
        o = run(s, Context(data=msg("To: ken@example.org"), recipient=rcpt))
        assert o.actions == [FileInto(box)], rcpt
    # no separator: :detail has nothing to match, even "*"
    o = run(s, Context(data=msg("To: ken@example.org"), recipient="ken@example.org"))
    assert o.actions == []
    o = run(s, Context(data=msg("To: ken+lists@example.org"), recipient="ken@example.org"))
    assert o.actions == [FileInto("inbox.has-detail")]


# --- copy (RFC 3894) ------------------------------------------------------------

def test_copy_rfc3894():
    o = go('require ["copy", "fileinto"];\nfileinto :copy "incoming";\n'
           'redirect :copy "elsewhere@example.com";', msg("S: x"))
    assert o.keep and o.actions == [FileInto("incoming"), Redirect("elsewhere@example.com")]


# --- body (RFC 5173) ----------------------------------------------------------------

def test_body_rfc5173_examples():
    data = corpus("mail-rb/attachment_emails/attachment_pdf.eml")
    assert not go('require "body";\nif body :raw :contains "JVBERi0xLjQN" { discard; }',
                  data).keep
    assert go('require "body";\nif body :contains "JVBERi0xLjQN" { discard; }', data).keep
    o = go('require ["body", "fileinto"];\n'
           'if body :content "text" :contains ["missile", "figure out what"] {\n'
           '        fileinto "secrets";\n}\n'
           'if body :content "application/pdf" :contains "" {\n'
           '        fileinto "jukebox";\n}\n'
           'if body :content "audio/mp3" :contains "" {\n        fileinto "mp3";\n}\n'
           'if body :text :contains "going wrong" {\n  fileinto "project/schedule";\n}', data)
    assert o.actions == [FileInto("secrets"), FileInto("jukebox"), FileInto("project/schedule")]
    # quoted-printable is decoded for :text; html parts become text
    html = corpus("mail-rb/attachment_emails/attachment_message_rfc822_inline_image.eml")
    assert not go('require "body"; if body :text :contains "img" { discard; }', html).keep is False
    qp = msg("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable",
             body="caf=C3=A9 cr=\r\nème\r\n")
    assert not go('require "body"; if body :contains "café crème" { discard; }', qp).keep


# --- date and index (RFC 5260) --------------------------------------------------

DATE_MSG = msg("Received: from a by b; Tue, 27 Feb 2007 10:00:00 -0500",
               "Received: from c by d; Mon, 26 Feb 2007 10:00:00 -0500",
               "Received: from e by f; Mon, 26 Feb 2007 08:00:00 -0500",
               "From: boss@example.com", "Date: Mon, 26 Feb 2007 11:30:00 +0100")


def test_date_rfc5260_examples():
    o = go('require ["date", "relational", "fileinto"];\n'
           'if allof(header :is "from" "boss@example.com",\n'
           '         date :value "ge" :originalzone "date" "hour" "09",\n'
           '         date :value "lt" :originalzone "date" "hour" "17")\n'
           '{ fileinto "urgent"; }', DATE_MSG)
    assert o.actions == [FileInto("urgent")]
    # 2007-07-01 12:00 UTC
    now = 1183291200
    o = go('require ["date", "relational", "fileinto"];\n'
           'if allof(currentdate :value "ge" "date" "2007-06-30",\n'
           '         currentdate :value "le" "date" "2007-07-07")\n'
           '{ fileinto "vacation"; }', DATE_MSG, now=now)
    assert o.actions == [FileInto("vacation")]
    o = go('require ["date", "variables", "fileinto"];\n'
           'if currentdate :zone "+0000" :matches "month" "*" { set "month" "${1}"; }\n'
           'if currentdate :zone "+0000" :matches "year"  "*" { set "year" "${1}"; }\n'
           'fileinto "${month}-${year}";', DATE_MSG, now=now)
    assert o.actions == [FileInto("07-2007")]
    o = go('require ["variables", "date", "editheader"];\n'
           'if currentdate :zone "+0000" :matches "std11" "*"'
           ' {addheader "Processing-date" "${0}";}', DATE_MSG, now=now)
    assert o.data.startswith(b"Processing-date: Sun, 01 Jul 2007 12:00:00 +0000\r\n")
    o = go('require ["date", "relational", "index"];\n'
           'if date :value "gt" :index 2 :zone "-0500" "received"\n'
           '       "iso8601" "2007-02-26T09:00:00-05:00"\n'
           '{ redirect "aftercutoff@example.org"; }', DATE_MSG)
    assert o.actions == [Redirect("aftercutoff@example.org")]
    o = go('require ["date", "relational", "index"];\n'
           'if date :value "gt" :index 1 :last :zone "-0500" "received"\n'
           '       "iso8601" "2007-02-26T09:00:00-05:00"\n'
           '{ redirect "aftercutoff@example.org"; }', DATE_MSG)
    assert o.actions == []
    parts = {"year": "2007", "month": "02", "day": "26", "date": "2007-02-26",
             "julian": "54157", "hour": "10", "minute": "30", "second": "00",
             "time": "10:30:00", "zone": "+0000", "weekday": "1",
             "iso8601": "2007-02-26T10:30:00+00:00"}
    for part, value in parts.items():
        o = go(f'require "date"; if date :zone "+0000" :is "date" "{part}" "{value}"'
               ' { discard; }', DATE_MSG)
        assert not o.keep, part


def test_index_on_header_and_address():
    data = msg("X-A: one", "X-A: two", "X-A: three", "To: a@x.test, b@y.test")
    s = 'require "index"; if header :index {} {} "x-a" "{}" {{ discard; }}'
    assert not go(s.format(2, "", "two"), data).keep
    assert not go(s.format(1, ":last", "three"), data).keep
    assert go(s.format(4, "", "one"), data).keep
    with pytest.raises(SieveError):
        compile('require "index";\nif header :last "x" "y" { keep; }')


# --- editheader (RFC 5293) ------------------------------------------------------

def test_editheader_rfc5293():
    data = msg("Received: from x by y; Mon, 1 Jan 2024 10:00:00 +0000",
               "Auto-Submitted: auto-generated", "From: kim@job.example.com",
               "X-Spam: one", "Subject: hi", "X-Spam: two")
    o = go('require ["editheader"];\n'
           'if not header :contains "X-Sieve-Filtered"\n'
           '    ["<kim@job.example.com>", "<kim@home.example.com>"]\n'
           '{\n    addheader "X-Sieve-Filtered" "<kim@job.example.com>";\n'
           '    redirect "kim@home.example.com";\n}', data)
    assert o.actions == [Redirect("kim@home.example.com")]
    assert o.data.startswith(b"X-Sieve-Filtered: <kim@job.example.com>\r\nReceived:")
    assert o.data.endswith(b"\r\n\r\nbody\r\n")
    o = go('require ["editheader", "variables", "fileinto"];\n'
           'addheader :last "X-Last" "caf\u00e9";\n'
           'deleteheader :index 1 :last "X-Spam";\n'
           'deleteheader "Received";\ndeleteheader "auto-submitted";\n'
           'if header :matches "subject" "*" {\n  deleteheader "Subject";\n'
           '  addheader "Subject" "[tag] ${1}";\n}\n'
           'if header :is "subject" "[tag] hi" { fileinto "seen-edit"; }\n'
           'if exists "x-last" { fileinto "seen-last"; }', data)
    parsed = mime.ParsedMessage(o.data)
    names = [n for n, _ in parsed.headers]
    assert names == ["Subject", "Received", "Auto-Submitted", "From", "X-Spam", "X-Last"]
    assert mime.header(parsed.headers, "x-spam") == "one"
    assert mime.decode_words(mime.header(parsed.headers, "x-last")) == "caf\u00e9"
    assert o.actions == [FileInto("seen-edit"), FileInto("seen-last")]
    o = go('require "editheader";\naddheader "Received" "by sieve.example; Mon, 1 Jan 2024";\n'
           'addheader "Auto-Submitted" "no";\nif header :is "auto-submitted" "no" '
           '{ deleteheader "auto-submitted"; deleteheader "received"; }', data)
    names = [n for n, _ in mime.ParsedMessage(o.data).headers]
    assert names[:2] == ["Auto-Submitted", "Received"] and names.count("Received") == 2
    o = go('require "editheader"; deleteheader :contains "X-Spam" "tw";', data)
    assert [n for n, _ in mime.ParsedMessage(o.data).headers].count("X-Spam") == 1
    assert go('keep;', data).data is None
    with pytest.raises(SieveError):
        compile('require "editheader";\naddheader "Bad Name" "x";')


# --- mime, foreverypart, extracttext (RFC 5703) ----------------------------------

def test_mime_foreverypart_rfc5703():
    data = corpus("mail-rb/attachment_emails/attachment_pdf.eml")
    o = go('require ["foreverypart", "mime", "fileinto"];\nforeverypart\n{\n'
           '  if allof (\n    header :mime :param "filename" :contains\n'
           '      "Content-Disposition" "broken",\n'
           '    header :mime :subtype "Content-Type" "pdf")\n  {\n'
           '    fileinto "INBOX.important";\n    break;\n  }\n}', data)
    assert o.actions == [FileInto("INBOX.important")]
    o = go('require ["mime", "fileinto"];\n'
           'if header :mime :anychild :contenttype "Content-Type" "application/pdf"'
           ' { fileinto "INBOX.pdf"; }\n'
           'if header :mime :type "Content-Type" "multipart" { fileinto "multi"; }\n'
           'if exists :mime :anychild "Content-Transfer-Encoding" { fileinto "cte"; }\n'
           'if address :mime :is "From" "xxxx@xxxx.com" { fileinto "from"; }', data)
    assert o.actions == [FileInto("INBOX.pdf"), FileInto("multi"), FileInto("cte"),
                         FileInto("from")]
    o = go('require ["mime", "variables", "extracttext", "foreverypart", "fileinto"];\n'
           'if header :matches "Subject" "*" { set "subject" "${1}"; }\n'
           'foreverypart :name "outer" {\n'
           '  if header :mime :type :is "Content-Type" "text" {\n'
           '    extracttext :first 20 "msgcontent";\n    break :name "outer";\n  }\n}\n'
           'fileinto "${msgcontent}";', data)
    assert o.actions == [FileInto("Just attaching anoth")]
    # nested loops visit the parts below the current one
    nested = corpus("mail-rb/attachment_emails/attachment_message_rfc822_inline_image.eml")
    o = go('require ["foreverypart", "mime", "variables", "fileinto"];\nset "n" "";\n'
           'foreverypart { if header :mime :subtype "Content-Type" "related" {\n'
           '  foreverypart { set "n" "${n}x"; } } }\nfileinto "n${n}";', nested)
    assert o.actions == [FileInto("nxxx")]   # alternative, html, image
    for bad in ('require "foreverypart";\nbreak;', 'require "extracttext";\nextracttext "x";',
                'require "foreverypart";\nforeverypart :name "a" { break :name "b"; }'):
        with pytest.raises(SieveError):
            compile(bad)


# --- environment (RFC 5183) -------------------------------------------------------

def test_environment_rfc5183():
    data = msg("Subject: x")
    script = ('require ["environment", "fileinto", "variables"];\n'
              'if environment :matches "remote-host" "*.example.com" { fileinto "local"; }\n'
              'if environment :is "location" "MDA" { fileinto "mda"; }\n'
              'if environment :is "name" "Roost" { fileinto "roost"; }\n'
              'if environment :is "phase" "during" { fileinto "during"; }\n'
              'if environment :matches "domain" "*" { fileinto "dom-${1}"; }\n'
              'if environment :contains "nonsense" "" { fileinto "never"; }\n')
    o = go(script, data, account="ann@roost.test",
           verdicts={"remote_host": "mx.example.com", "remote_ip": "192.0.2.1"})
    assert [a.mailbox for a in o.actions] == ["local", "mda", "roost", "during",
                                              "dom-roost.test"]
    o = go('require "environment"; if environment :is "remote-ip" "192.0.2.9" { discard; }',
           data, environment={"remote-ip": "192.0.2.9"})
    assert not o.keep


# --- ihave (RFC 5463) -----------------------------------------------------------

def test_ihave_rfc5463():
    o = go('require ["ihave", "fileinto"];\n'
           'if ihave "frobnicate" {\n  frobnicate :loudly "x";\n}\n'
           'elsif ihave ["fileinto", "copy"] {\n  fileinto :copy "got-copy";\n}\n'
           'if not ihave "frobnicate" { fileinto "no-frob"; }', msg("S: x"))
    assert o.actions == [FileInto("got-copy"), FileInto("no-frob")] and not o.keep
    o = go('require "ihave";\nif not ihave "vacation" { error "no vacation"; }\n'
           'error "Unsupported feature";', msg("S: x"))
    assert o.error and "Unsupported feature" in o.error and o.keep and o.actions == []


# --- enotify and mailto (RFC 5435/5436) ---------------------------------------------

def test_enotify_rfc5435_examples():
    script = ('require ["enotify", "fileinto", "variables"];\n'
              'if header :contains "from" "boss@example.org" {\n'
              '    notify :importance "1"\n'
              '        :message "This is probably very important"\n'
              '                    "mailto:alm@example.com";\n    stop;\n}\n'
              'if header :contains "to" "sievemailinglist@example.org" {\n'
              '    if header :matches "Subject" "*" {\n        set "subject" "${1}";\n    }\n'
              '    if header :matches "From" "*" {\n        set "from" "${1}";\n    }\n'
              '    notify :importance "3"\n        :message "[SIEVE] ${from}: ${subject}"\n'
              '        "mailto:alm@example.com";\n    fileinto "INBOX.sieve";\n}')
    s = compile(script)
    o = run(s, Context(data=msg("From: boss@example.org", "Subject: x")))
    assert o.actions == [Notify("mailto:alm@example.com", None, "1", (),
                                "This is probably very important")] and o.keep
    o = run(s, Context(data=msg("From: Sam <sam@x.test>", "To: sievemailinglist@example.org",
                                "Subject: tests")))
    assert o.actions == [Notify("mailto:alm@example.com", None, "3", (),
                                "[SIEVE] Sam <sam@x.test>: tests"), FileInto("INBOX.sieve")]
    o = go('require ["enotify", "variables"];\n'
           'set :encodeurl "body_param" "Safe body&evil=evilbody";\n'
           'notify "mailto:tim@example.com?body=${body_param}";', msg("S: x"))
    assert o.actions[0].method == "mailto:tim@example.com?body=Safe%20body%26evil%3Devilbody"
    o = go('require ["enotify", "fileinto"];\n'
           'if valid_notify_method ["mailto:a@b.example", "mailto:x@y.example?subject=hi"]'
           ' { fileinto "valid"; }\n'
           'if valid_notify_method "xmpp:tim@example.com" { fileinto "xmpp"; }\n'
           'if notify_method_capability "mailto:a@b.example" "Online" "maybe"'
           ' { fileinto "maybe"; }', msg("S: x"))
    assert o.actions == [FileInto("valid"), FileInto("maybe")]
    with pytest.raises(SieveError):
        compile('require "enotify";\nnotify "xmpp:tim@example.com";')
    with pytest.raises(SieveError):
        compile('require "enotify";\nnotify :importance "7" "mailto:a@b.example";')


# --- spamtest, spamtestplus, virustest (RFC 5235) ----------------------------------

SPAM = ('require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];\n'
        'if spamtest :value "eq" :comparator "i;ascii-numeric" "0"\n'
        '{\n    fileinto "INBOX.unclassified";\n}\n'
        'elsif spamtest :value "ge" :comparator "i;ascii-numeric" "3"\n'
        '{\n    fileinto "INBOX.spam-trap";\n}')
SPAMPLUS = ('require ["spamtestplus", "fileinto", "relational",\n'
            '         "comparator-i;ascii-numeric"];\n'
            'if spamtest :percent :value "eq" :comparator "i;ascii-numeric" "0"\n'
            '{\n    fileinto "INBOX.unclassified";\n}\n'
            'elsif spamtest :percent :value "ge" :comparator "i;ascii-numeric" "60"\n'
            '{\n    fileinto "INBOX.spam-trap";\n}')
VIRUS = ('require ["virustest", "fileinto", "relational", "comparator-i;ascii-numeric"];\n'
         'if virustest :value "eq" :comparator "i;ascii-numeric" "0"\n'
         '{\n    fileinto "INBOX.unclassified";\n}\n'
         'if virustest :value "eq" :comparator "i;ascii-numeric" "4"\n'
         '{\n    fileinto "INBOX.quarantine";\n}\n'
         'elsif virustest :value "eq" :comparator "i;ascii-numeric" "5"\n'
         '{\n    discard;\n}')


def test_spamtest_rfc5235():
    data = msg("S: x")
    assert go(SPAM, data).actions == [FileInto("INBOX.unclassified")]
    assert go(SPAM, data, verdicts={"spam_score": 0.5}).actions == []
    assert go(SPAM, data, verdicts={"spam_score": 9.0}).actions == [FileInto("INBOX.spam-trap")]
    assert go(SPAMPLUS, data).actions == [FileInto("INBOX.unclassified")]
    assert go(SPAMPLUS, data, verdicts={"spam_score": 2.0}).actions == []
    assert go(SPAMPLUS, data, verdicts={"spam_score": 7.0, "spam_threshold": 5.0}).actions == \
        [FileInto("INBOX.spam-trap")]
    # DMARC quarantine marks spam without a high score
    assert go(SPAM, data, verdicts={"spam": True, "spam_score": 0}).actions == \
        [FileInto("INBOX.spam-trap")]
    counted = SPAMPLUS.replace(':percent :value "eq"', ':percent :count "eq"', 1)
    assert go(counted, data).actions == [FileInto("INBOX.unclassified")]
    assert go(counted, data, verdicts={"spam_score": 1.0}).actions == []
    with pytest.raises(SieveError):
        compile('require "spamtest";\nif spamtest :percent "1" { keep; }')


def test_virustest_rfc5235():
    data = msg("S: x")
    assert go(VIRUS, data).actions == [FileInto("INBOX.unclassified")]
    assert go(VIRUS, data, verdicts={"virus": False}).actions == []
    o = go(VIRUS, data, verdicts={"virus": True})
    assert o.actions == [] and not o.keep


# --- mailbox (RFC 5490), special-use (RFC 8579) -------------------------------------

class StoreHooks(Hooks):
    def __init__(self, boxes=(), special=None, scripts=None, seen=()):
        self.boxes, self.special = set(boxes), special or {}
        self.scripts, self.seen, self.asked = scripts or {}, set(seen), []

    def mailbox_exists(self, name):
        return name in self.boxes

    def specialuse_exists(self, flag, mailbox=None):
        if mailbox is None:
            return flag in self.special.values()
        return self.special.get(mailbox) == flag

    def duplicate(self, key):
        self.asked.append(key)
        return key in self.seen

    def include(self, name, location):
        try:
            return self.scripts[(location, name)]
        except KeyError:
            raise LookupError(name) from None


def test_mailbox_rfc5490():
    script = ('require ["mailbox", "fileinto"];\n'
              'if mailboxexists "Partners" {\n   fileinto "Partners";\n} else {\n'
              '   fileinto :create "INBOX.Partners";\n}')
    o = go(script, msg("S: x"), hooks=StoreHooks(["Partners"]))
    assert o.actions == [FileInto("Partners")]
    o = go(script, msg("S: x"), hooks=StoreHooks())
    assert o.actions == [FileInto("INBOX.Partners", create=True)]


def test_special_use_rfc8579():
    hooks = StoreHooks(special={"Spam": "\\Junk"})
    o = go('require ["fileinto", "special-use"];\nfileinto :specialuse "\\\\Junk" "Spam";',
           msg("S: x"), hooks=hooks)
    assert o.actions == [FileInto("Spam", specialuse="\\Junk")]
    o = go('require ["fileinto", "special-use", "mailbox"];\n'
           'if specialuse_exists "\\\\Junk" { fileinto "any-junk"; }\n'
           'if specialuse_exists "Spam" "\\\\Junk" { fileinto "spam-is-junk"; }\n'
           'if specialuse_exists "Spam" "\\\\Trash" { fileinto "no"; }\n'
           'fileinto :specialuse "\\\\Archive" :create "Archive";', msg("S: x"), hooks=hooks)
    assert o.actions == [FileInto("any-junk"), FileInto("spam-is-junk"),
                         FileInto("Archive", create=True, specialuse="\\Archive")]


# --- include (RFC 6609) -------------------------------------------------------------

def test_include_rfc6609():
    scripts = {
        ("personal", "always_allow"): 'if address :is "from" "boss@example.com" { keep; stop; }',
        ("global", "spam_tests"): 'require "fileinto";\n'
                                  'if header :contains "subject" "viagra" { fileinto "Junk"; }',
        ("personal", "spam_tests"): 'require "reject";\n'
                                    'if header :contains "subject" "$$$" { discard; }',
        ("personal", "mailing_lists"): 'require ["fileinto", "include"];\nif exists "list-id" '
                                       '{ fileinto "Lists"; return; }\nfileinto "NotReached";',
    }
    script = ('require ["include"];\ninclude :personal "always_allow";\n'
              'include :global "spam_tests";\ninclude :personal "spam_tests";\n'
              'include :personal "mailing_lists";\nkeep;')
    hooks = StoreHooks(scripts=scripts)
    o = go(script, msg("From: boss@example.com"), hooks=hooks)
    assert o.actions == [Keep()]
    o = go(script, msg("From: x@y.test", "Subject: viagra", "List-ID: <a.b>"), hooks=hooks)
    assert o.actions == [FileInto("Junk"), FileInto("Lists"), Keep()]
    o = go(script, msg("From: x@y.test", "Subject: $$$ now"), hooks=hooks)
    assert o.actions == [FileInto("NotReached"), Keep()]


def test_include_global_variables_rfc6609():
    scripts = {("personal", "subject_tests"):
               'require ["variables", "include"];\nglobal ["test", "test_mailbox"];\n'
               'if header :contains "Subject" "${test}" {\n'
               '    set "test_mailbox" "spam-${test}";\n}'}
    script = ('require ["include", "variables", "relational", "fileinto"];\n'
              'global "test";\nglobal "test_mailbox";\n\nset "test" "$$";\n'
              'include "subject_tests";\n\nset "test" "Make money";\n'
              'include "subject_tests";\n\n'
              'if string :count "eq" "${test_mailbox}" "1" {\n'
              '    fileinto "${test_mailbox}";\n    stop;\n}')
    hooks = StoreHooks(scripts=scripts)
    o = go(script, msg("Subject: Make money fast"), hooks=hooks)
    assert o.actions == [FileInto("spam-Make money")]
    o = go(script, msg("Subject: $$ inside"), hooks=hooks)
    assert o.actions == [FileInto("spam-$$")]
    o = go(script, msg("Subject: hello"), hooks=hooks)
    assert o.actions == [] and o.keep
    # local variables stay local; ${global.x} reads the global one
    scripts[("personal", "local")] = ('require "variables";\nset "test" "changed";\n')
    o = go('require ["include", "variables", "fileinto"];\nset "test" "mine";\n'
           'global "g"; set "g" "G";\ninclude "local";\nfileinto "${test}-${global.g}";',
           msg("S: x"), hooks=hooks)
    assert o.actions == [FileInto("mine-G")]


def test_include_errors_and_limits():
    hooks = StoreHooks(scripts={("personal", "self"): 'require "include"; include "self";',
                                ("personal", "bad"): 'frobnicate;',
                                ("personal", "once"): 'require "fileinto"; fileinto "o";'})
    o = go('require "include"; include "self";', msg("S: x"), hooks=hooks)
    assert o.error and "loop" in o.error and o.keep and o.actions == []
    o = go('require "include"; include "missing";', msg("S: x"), hooks=hooks)
    assert o.error and o.keep
    o = go('require "include"; include :optional "missing"; keep;', msg("S: x"), hooks=hooks)
    assert o.error is None and o.actions == [Keep()]
    o = go('require "include"; include "bad";', msg("S: x"), hooks=hooks)
    assert o.error and "unknown command" in o.error
    o = go('require "include"; include :once "once"; include :once "once";\n'
           'include "once";', msg("S: x"), hooks=hooks)
    assert o.actions == [FileInto("o")]
    # a chain deeper than the budget
    chain = {("personal", f"s{i}"): f'require "include"; include "s{i + 1}";' for i in range(50)}
    o = go('require "include"; include "s0";', msg("S: x"), hooks=StoreHooks(scripts=chain))
    assert o.error and "deeply" in o.error


# --- duplicate (RFC 7352) ---------------------------------------------------------

def test_duplicate_rfc7352():
    data = msg("Message-ID: <abc@example.com>", "Subject: ALERT: disk full")
    script = ('require ["duplicate", "fileinto", "mailbox"];\n'
              'if duplicate {\n  fileinto :create "Trash/Duplicate";\n}')
    hooks = StoreHooks()
    o = go(script, data, hooks=hooks)
    assert o.actions == [] and len(o.duplicates) == 1 and o.duplicates[0][1] > 0
    key = o.duplicates[0][0]
    o = go(script, data, hooks=StoreHooks(seen=[key]))
    assert o.actions == [FileInto("Trash/Duplicate", create=True)] and o.duplicates == []
    o = go('require ["duplicate", "variables", "imap4flags", "fileinto"];\n'
           'if header :matches "subject" "ALERT: *" {\n'
           '  if duplicate :seconds 60 :uniqueid "${1}" {\n    setflag "\\\\seen";\n  }\n'
           '  fileinto "Alerts";\n}', data, hooks=StoreHooks())
    assert o.actions == [FileInto("Alerts")] and o.duplicates[0][1] == 60
    other = o.duplicates[0][0]
    assert other != key
    o = go('require ["duplicate", "variables", "imap4flags", "fileinto"];\n'
           'if header :matches "subject" "ALERT: *" {\n'
           '  if duplicate :seconds 60 :uniqueid "${1}" {\n    setflag "\\\\seen";\n  }\n'
           '  fileinto "Alerts";\n}', data, hooks=StoreHooks(seen=[other]))
    assert o.actions == [FileInto("Alerts", ("\\seen",))]
    # handles separate the ids; a message without the header is never a duplicate
    o = go('require "duplicate"; if duplicate :handle "a" { discard; }\n'
           'if duplicate :handle "b" { discard; }\nif duplicate :handle "a" { keep; }', data)
    assert len(o.duplicates) == 2 and o.actions == [Keep()]
    o = go('require "duplicate"; if duplicate :header "x-none" { discard; }', data)
    assert o.keep and o.duplicates == []


# --- vacation-seconds (RFC 6131) ----------------------------------------------------

def test_vacation_seconds_rfc6131():
    o = go('require ["vacation-seconds"];\n'
           'vacation :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]\n'
           '         :seconds 1800\n'
           '         "I am in a meeting, and do not have access to email.";', msg("S: x"))
    assert o.actions == [Vacation("I am in a meeting, and do not have access to email.",
                                  None, None, ("tjs@example.edu", "ts4z@landru.example.edu"),
                                  1800, o.actions[0].handle, False)]
    o = go('require ["vacation", "variables"];\nif header :matches "subject" "*" {\n'
           '    vacation :subject "Automatic response to: ${1}" "I\'m away";\n}',
           msg("Subject: lunch?"))
    assert o.actions[0].subject == "Automatic response to: lunch?"
    with pytest.raises(SieveError):
        compile('require "vacation";\nvacation :seconds 10 "x";')


def test_ereject_rfc5429():
    o = go('require ["ereject"];\n\nif address "from" "someone.i.hate@example.com"\n{\n'
           '    ereject "I no longer accept mail from this address";\n}',
           msg("From: someone.i.hate@example.com"))
    assert o.actions == [Reject("I no longer accept mail from this address", True)]
    assert not o.keep


# --- budgets: hostile scripts hit a limit fast and keep ------------------------------

def fast(fn, limit=5.0):
    """``fn()``, which must stop within the budget: CPU seconds, so a loaded
    machine does not count, and far more than a budgeted run needs (an
    unbounded one runs for minutes)."""
    start = time.process_time()
    result = fn()
    assert time.process_time() - start < limit
    return result


def test_budget_huge_variables():
    # doubling: each value is cut at the variable limit, and the characters
    # built by expansions count as work, so a long run of them ends fast
    script = 'require "variables";\nset "a" "xxxxxxxxxxxxxxxx";\n' + \
        'set "a" "${a}${a}${a}${a}";\n' * 200 + 'redirect "x@y.example";'
    o = fast(lambda: go(script, msg("S: x")))
    assert o.error and "budget" in o.error and o.keep and o.actions == []
    script = 'require "variables";\nset "a" "' + "x" * 30000 + '";\n' + \
        'set "b" "' + "${a}" * 1000 + '";'
    o = fast(lambda: go(script, msg("S: x")))
    assert o.error and "budget" in o.error
    # one long value is cut to the variable limit (RFC 5229), not an error
    o = go('require ["variables", "fileinto"];\nset "a" "' + "x" * 30000 + '";\n'
           'set "b" "${a}${a}${a}";\nset :length "n" "${b}";\nfileinto "${n}";', msg("S: x"))
    assert o.actions == [FileInto(str(64 * 1024))]
    # many of them fill the budget for all variables
    script = 'require "variables";\nset "a" "' + "x" * 30000 + '";\nset "b" "${a}${a}${a}";\n' + \
        "".join(f'set "v{i}" "${{b}}";\n' for i in range(20))
    o = fast(lambda: go(script, msg("S: x")))
    assert o.error and "variables too large" in o.error and o.keep


def test_budget_regex_backtracking():
    data = msg("Subject: " + "a" * 50000 + "!")
    o = fast(lambda: go('require ["regex", "fileinto"];\n'
                        'if header :regex "subject" "^(a+)+$" { fileinto "x"; }\n'
                        'if header :regex "subject" "(a|aa)*(a|aa)*(a|aa)*b" { fileinto "y"; }\n'
                        'if header :matches "subject" "*a*a*a*a*a*a*a*a*b" { fileinto "z"; }',
                        data), 1.0)
    assert o.error is None and o.actions == []


def nested_message(depth):
    head = b"From: a@b.test\r\nSubject: deep\r\n"
    body = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        body = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b +
                b"\r\n" + body + b"\r\n--" + b + b"\r\n" + body + b"\r\n--" + b + b"--\r\n")
        if len(body) > 2_000_000:
            break
    return head + body


def test_budget_foreverypart_explosion():
    data = nested_message(12)   # thousands of parts
    script = ('require ["foreverypart", "mime", "fileinto"];\n'
              'foreverypart { foreverypart { foreverypart {\n'
              '  if header :mime :type "Content-Type" "zzz" { fileinto "never"; } } } }')
    o = fast(lambda: go(script, data))
    assert o.error and "budget" in o.error and o.keep and o.actions == []


def test_budget_matching_work_and_time():
    data = msg("Subject: x", body="abcdefghij" * 100000)
    keys = ", ".join(f'"*z{i}*"' for i in range(300))
    o = fast(lambda: go(f'require "body";\nif body :matches [{keys}] {{ discard; }}', data))
    assert o.error and "budget" in o.error and o.keep

    class Tiny:
        seconds = seconds_per_mb = 0.0
        actions = redirects = notifies = 4
        variable = variables = string = list_items = 1 << 20
        include_depth = includes = loop_iterations = hook_calls = 10
        work = 1 << 30

    o = run(compile("keep;"), Context(data=data), budget=Tiny)
    assert o.error and "time" in o.error and o.keep


def test_budget_store_lookups():
    boxes = ", ".join(f'"b{i}"' for i in range(300))
    o = go(f'require "mailbox";\nif mailboxexists [{boxes}] {{ discard; }}', msg("S: x"),
           hooks=StoreHooks(boxes=[f"b{i}" for i in range(300)]))
    assert o.error and "look-ups" in o.error and o.keep


def test_budget_actions_and_redirects():
    script = "\n".join(f'redirect "u{i}@example.com";' for i in range(10))
    o = go(script, msg("S: x"))
    assert o.error and "redirect" in o.error and o.keep and o.actions == []
    script = 'require "fileinto";\n' + "\n".join(f'fileinto "b{i}";' for i in range(100))
    o = go(script, msg("S: x"))
    assert o.error and "actions" in o.error


def test_hostile_script_text_fails_compile_cleanly():
    with pytest.raises(SieveError):
        compile("if " + "not " * 5000 + "true { keep; }")
    with pytest.raises(SieveError):
        compile("if true {" * 200 + "}" * 200)
    with pytest.raises(SieveError):
        compile('keep;' * 40000)


def test_ihave_in_allof_and_global_namespace():
    o = go('require ["ihave", "include", "variables", "fileinto"];\n'
           'if allof (ihave "frobnicate", true) { frobnicate; }\n'
           'if allof (ihave "copy", true) { fileinto :copy "c"; }\n'
           'set "global.x" "gx";\nfileinto "${global.x}";', msg("S: x"))
    assert o.actions == [FileInto("c"), FileInto("gx")]


def test_invalid_utf8_script_line():
    with pytest.raises(SieveError) as e:
        compile(b'keep;\n\n"\xff";'.decode("utf-8", "surrogateescape"))
    assert e.value.line == 3


SWEEP = ('require ["body", "mime", "foreverypart", "extracttext", "variables", "date",\n'
         ' "index", "relational", "regex", "editheader", "fileinto", "imap4flags",\n'
         ' "duplicate", "comparator-i;ascii-numeric", "envelope", "subaddress"];\n'
         'if header :matches "subject" "*" { set "s" "${1}"; }\n'
         'if address :all :matches ["from", "to", "cc"] "*@*" { set "d" "${2}"; }\n'
         'if date :zone "+0000" :matches "date" "date" "*" { set "dt" "${1}"; }\n'
         'if body :text :contains "the" { addflag "the"; }\n'
         'if body :raw :regex "[0-9]{4}" { addflag "digits"; }\n'
         'foreverypart {\n'
         '  if header :mime :param "filename" :matches "Content-Disposition" "*"'
         ' { set "f" "${1}"; }\n'
         '  if header :mime :type "Content-Type" "text" { extracttext :first 50 "t"; } }\n'
         'if duplicate { addflag "dup"; }\n'
         'deleteheader "x-nothing"; addheader "X-Test" "${s}";\n'
         'if header :count "ge" :comparator "i;ascii-numeric" "received" "1"'
         ' { addflag "rcvd"; }\n'
         'if envelope :detail "to" "*" { addflag "detail"; }\n'
         'fileinto "x";\n')


def test_corpus_sweep_never_errors():
    """Every corpus message (broken MIME, 8-bit headers, huge parts) runs a script
    touching every kind of test without a runtime error."""
    if not os.path.isdir(CORPUS):
        pytest.skip("../shared/corpus not present")
    script = compile(SWEEP)
    count = 0
    for root, _dirs, files in os.walk(CORPUS):
        for name in sorted(files):
            if not name.endswith(".eml"):
                continue
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            o = run(script, Context(data=data, parsed=mime.ParsedMessage(data),
                                    recipient="a+b@c.test"))
            assert o.error is None, (root, name, o.error)
            assert o.actions and o.data is not None and o.data.endswith(
                data[mime.ParsedMessage(data).structure[mime.BODY_START]:])
            count += 1
    assert count > 100


@pytest.mark.parametrize("subject,pattern,expected", [
    ("frop:frup:frop", "*:*:*", ["frop", "frup", "frop"]),
    ("frop.......frop.........frop....", "?*frop*", ["f", "rop.......", ".........frop...."]),
    ("klopfropstroptop", "*?op", ["klopfropstrop", "t"]),
    ("klopfropstroptop", "*?op*", ["k", "l", "fropstroptop"]),
    ("klopfropstroptop", "*fr??*top", ["klop", "o", "p", "strop"]),
    ("foo1234@foobar.example.com", "*??@foobar.example.com", ["foo12", "3", "4"]),
    ("d@example.com", "*?@example.com", ["", "d"]),
    ("puk pok puk pok", "pu*ok", ["k pok puk p"]),
    ("zero:one:zero|three;one;zero/five", "*one?zero?five", ["zero:one:zero|three;", ";", "/"]),
    ("beter van niet?", "*\\\\?", ["beter van niet"]),
    ("frop", "??op", ["f", "r"]),
])
def test_matches_expansions(subject, pattern, expected):
    refs = "|".join(f"${{{i}}}" for i in range(1, len(expected) + 1))
    o = go('require ["variables", "fileinto"];\n'
           f'if string :matches "{subject}" "{pattern}" {{ fileinto "${{0}}={refs}"; }}',
           msg("S: x"))
    assert o.actions == [FileInto(f"{subject}=" + "|".join(expected))]


def test_match_variables_keep_their_values_when_a_match_fails():
    o = go('require ["variables", "fileinto"];\n'
           'set "s2" "the dog barks at the cat in the alley";\n'
           'if string :matches "the cat jumps off the table" "the * jumps off the *" {}\n'
           'if string :matches "${s2}" "the * barks at the * in the store" {}\n'
           'fileinto "${1}:${2}:${0000002}:${12}";', msg("S: x"))
    assert o.actions == [FileInto("cat:table:table:")]


def test_mime_param_decodes_rfc2231_and_8bit_names():
    data = corpus("mail-rb/attachment_emails/attachment_nonascii_filename.eml")
    o = go('require ["mime", "fileinto"];\n'
           'if header :mime :anychild :param "filename" :is "Content-Disposition"'
           ' "ci\u00eble.txt" { fileinto "found"; }', data)
    assert o.actions == [FileInto("found")]
    data = corpus("mail-rb/attachment_emails/attachment_with_encoded_name.eml")
    o = go('require ["mime", "fileinto"];\n'
           'if header :mime :anychild :param "name" :matches "Content-Type" "01 Quien*.mp3"'
           ' { fileinto "mp3"; }', data)
    assert o.actions == [FileInto("mp3")]
