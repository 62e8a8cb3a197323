"""The Sieve interpreter (storage.sieve): compile errors with their lines, and
runs against real messages asserting the actions (RFC 5228 and the base
extensions: fileinto, reject/ereject, envelope, vacation, imap4flags, copy)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from roost.storage.sieve import EXTENSIONS, SieveError, compile, run
from roost.storage.sieve.actions import Context, FileInto, Keep, Redirect, Reject, Vacation

MSG = (b"Received: from mx.example.net by roost.test; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
       b"Date: Tue, 1 Apr 1997 09:06:31 -0800\r\n"
       b"From: coyote@desert.example.org\r\n"
       b"To: roadrunner@acme.example.com\r\n"
       b"Subject: I have a present for you\r\n"
       b"X-Caffeine: C8H10N4O2\r\n"
       b"\r\n"
       b"Look, I'm sorry about the whole anvil thing, and I really\r\n"
       b"didn't mean to try and drop it on you from the top of the\r\n"
       b"cliff.  I want to try to make it up to you.  I've got some\r\n"
       b"great birdseed over here at my place--top of the line\r\n"
       b"stuff--and if you come by, I'll have it all wrapped\r\n"
       b"up for you.  I'm really sorry for all the problems I've\r\n"
       b"caused.  I'm sure you wouldn't like it if I'd been the one\r\n"
       b"who'd had an anvil dropped on his head\r\n")


def outcome(script, data=MSG, **kw):
    kw.setdefault("sender", "coyote@desert.example.org")
    kw.setdefault("recipient", "roadrunner@acme.example.com")
    return run(compile(script), Context(data=data, **kw))


def err_line(script):
    with pytest.raises(SieveError) as e:
        compile(script)
    return e.value.line


# --- RFC 5228 examples ------------------------------------------------------

RFC5228_FINAL = """
# Example Sieve Filter
# Declare any optional features or extension used by the script
require ["fileinto"];

# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter mailbox
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
        fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
        keep;               # keep in "In" mailbox
        }

#
# Try and catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        fileinto "spam";   # move to "spam" mailbox
        }
else
        {
        # Move all other (non-company) mail to "personal"
        # mailbox.
        fileinto "personal";
        }
"""


def headers(*lines):
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def test_rfc5228_final_example():
    s = compile(RFC5228_FINAL)
    ctx = lambda data: Context(data=data)  # noqa: E731
    o = run(s, ctx(headers("Sender: owner-ietf-mta-filters@imc.org", "To: x@y.z")))
    assert o.actions == [FileInto("filter")] and not o.keep
    o = run(s, ctx(headers("From: boss@example.com", "To: me@example.com")))
    assert o.actions == [Keep()] and not o.keep
    o = run(s, ctx(headers("From: x@spam.test", "To: other@example.net")))
    assert o.actions == [FileInto("spam")]
    o = run(s, ctx(headers("From: x@spam.test", "To: a@b.test", "Cc: me@example.com",
                           "Subject: MAKE MONEY FAST")))
    assert o.actions == [FileInto("spam")]
    o = run(s, ctx(headers("From: friend@else.test", "To: a@b.test", "Cc: me@example.com",
                           "Subject: hi")))
    assert o.actions == [FileInto("personal")]


def test_rfc5228_section_examples():
    # 2.10.2 implicit keep / 4.1 fileinto / 4.2 redirect / 4.3 keep / 4.4 discard
    assert outcome("").keep and outcome("").actions == []
    o = outcome('require "fileinto";\nif header :contains ["from"] "coyote" {\n'
                '   redirect "acm@example.com";\n} elsif header :contains "Subject" "$$$" {\n'
                '   redirect "postmaster@example.com";\n} else {\n'
                '   redirect "field@example.com";\n}')
    assert o.actions == [Redirect("acm@example.com")] and not o.keep
    o = outcome('if size :under 1M { keep; } else { discard; }')
    assert o.actions == [Keep()] and not o.keep
    o = outcome('if size :over 100 { discard; }')
    assert o.actions == [] and not o.keep
    o = outcome('if header :contains ["from"] ["idiot@example.com"] { discard; }')
    assert o.keep
    # 5.1 address / 5.2 allof / 5.3 anyof / 5.5 exists / 5.7 header / 5.9 size
    assert not outcome('if address :is :all "from" "tim@example.com" { discard; }').keep is False
    assert not outcome('if address :is :all "from" "coyote@desert.example.org" { discard; }').keep
    assert not outcome('if allof (header :contains "from" "Coyote",\n'
                       '   header :contains "to" "Roadrunner") { discard; }').keep
    assert not outcome('if anyof (false, header :contains "from" "coyote") { discard; }').keep
    assert outcome('if exists ["From","Date","X-None"] { discard; }').keep
    assert not outcome('if not exists ["To","X-None"] { discard; }').keep
    assert not outcome('if header :contains ["X-Caffeine"] [""] { discard; }').keep
    assert outcome('if header :contains ["X-Caffeeine"] [""] { discard; }').keep
    assert not outcome('if header :is ["X-Caffeine"] ["C8H10N4O2"] { discard; }').keep
    assert not outcome('if header :matches "Subject" "I have a*" { discard; }').keep
    assert not outcome('if size :over 500 { discard; }').keep
    assert outcome('if size :over 1K { discard; }').keep
    # 2.7.1 comparators: octet is case-sensitive
    assert outcome('if header :is :comparator "i;octet" "subject" "i HAVE a present for you"'
                   ' { discard; }').keep
    assert not outcome('if header :is "subject" "i HAVE a present for you" { discard; }').keep


def test_rfc5228_envelope_and_stop():
    o = outcome('require "envelope";\n'
                'if envelope :all :is "from" "tim@example.com" { discard; }\n'
                'if envelope :localpart :is "to" "roadrunner" { keep; stop; }\n'
                'discard;')
    assert o.actions == [Keep()] and not o.keep
    # the null reverse-path matches the empty string whatever the address part
    o = outcome('require "envelope"; if envelope :domain :is "from" "" { discard; }', sender="")
    assert not o.keep


def test_matches_wildcards_and_escapes():
    for pattern, hit in [("I have a present for you", True), ("I have ? present*", True),
                         ("*present", False), ("*you", True), ("?", False),
                         ("I\\\\*", False), ("*a*e*o*", True)]:
        o = outcome(f'if header :matches "subject" "{pattern}" {{ discard; }}')
        assert o.keep is not hit, pattern
    data = headers("Subject: a*b")
    assert not outcome('if header :matches "subject" "a\\\\*b" { discard; }', data).keep
    assert outcome('if header :matches "subject" "a\\\\*c" { discard; }', data).keep


def test_encoded_character():
    o = outcome('require ["encoded-character", "fileinto"];\n'
                'fileinto "${hex:49 4e 42 4f 58}.${unicode:00e9}";')
    assert o.actions == [FileInto("INBOX.\u00e9")]
    # without the require, the text stays as it is
    o = outcome('require "fileinto"; fileinto "${hex:41}";')
    assert o.actions == [FileInto("${hex:41}")]
    assert err_line('require "encoded-character";\n\nkeep;\nredirect "${unicode:D800}@x.y";') == 4


# --- compile errors -----------------------------------------------------------

@pytest.mark.parametrize("script,line", [
    ('keep;\nfoo;', 2),
    ('require "fileinto";\nif true {\n  fileinto;\n}', 3),
    ('fileinto "x";', 1),
    ('require "vacation-x";', 1),
    ('keep;\nrequire "fileinto";', 2),
    ('if header :is "subject" "x" {\n keep;\n', 3),
    ('elsif true { keep; }', 1),
    ('if true { keep; }\nkeep;\nelse { keep; }', 3),
    ('\n\nif header :comparator "i;nope" "a" "b" { keep; }', 3),
    ('if header :count "ge" "a" "b" { keep; }', 1),
    ('require "relational";\nif header :count "gg" "a" "b" { keep; }', 2),
    ('require "regex";\n\nif header :regex "subject" "a(" { keep; }', 3),
    ('if header :contains :comparator "i;ascii-numeric" "a" "1" { keep; }', 1),
    ('require "comparator-i;ascii-numeric";\nif header :contains :comparator "i;ascii-numeric" "a" "1" { keep; }', 2),
    ('if header :is :contains "a" "b" { keep; }', 1),
    ('if size 100 { keep; }', 1),
    ('keep :copy;', 1),
    ('require "copy";\nredirect :copy "not an address";', 2),
    ('if true keep;', 1),
    ('stop true;', 1),
    ('if header "a" { keep; }', 1),
    ('require "variables";\nset "1bad" "x";', 2),
    ('require "imap4flags";\nsetflag "var" "x";', 2),
    ('"just a string";', 1),
    ('if address :user "from" "x" { keep; }', 1),
    ('keep;\n/* unterminated', 2),
    ('require "vacation";\nvacation :days "x" "away";', 2),
    ('header "a" "b";', 1),
    ('if keep { stop; }', 1),
])
def test_compile_errors_carry_the_line(script, line):
    assert err_line(script) == line


def test_compile_accepts_and_lists_extensions():
    s = compile('require ["fileinto", "reject", "envelope", "vacation", "imap4flags"];\nkeep;')
    assert {"fileinto", "reject", "vacation"} <= s.extensions
    for ext in ("fileinto", "reject", "ereject", "envelope", "vacation", "imap4flags", "copy",
                "encoded-character"):
        assert ext in EXTENSIONS
    assert "mboxmetadata" in EXTENSIONS and "servermetadata" in EXTENSIONS
    assert compile("# nothing\n").commands == []


# --- actions and the implicit keep ------------------------------------------

def test_fileinto_redirect_discard_cancel_implicit_keep_but_not_copy():
    o = outcome('require ["fileinto", "copy"]; fileinto :copy "A"; redirect :copy "x@y.example";')
    assert o.keep and o.actions == [FileInto("A"), Redirect("x@y.example")]
    o = outcome('require "fileinto"; fileinto "A"; fileinto "A"; fileinto "B";')
    assert not o.keep and o.actions == [FileInto("A"), FileInto("B")]
    o = outcome('redirect "x@y.example"; redirect "X@y.example";')
    assert not o.keep and o.actions == [Redirect("x@y.example")]
    o = outcome('discard; keep;')
    assert o.actions == [Keep()] and not o.keep


def test_reject_and_ereject():
    o = outcome('require "reject";\nif header :contains "from" "coyote" {\n'
                '   reject text:\nI am not taking mail from you, and I don\'t\n'
                'want your birdseed, either!\n.\n;\n}')
    assert o.actions == [Reject("I am not taking mail from you, and I don't\n"
                                "want your birdseed, either!\n")]
    assert not o.keep
    o = outcome('require "ereject"; ereject "Go away";')
    assert o.actions == [Reject("Go away", extended=True)]
    # reject cannot be combined with keep, fileinto, vacation or another reject
    for other in ('keep;', 'require "fileinto"; fileinto "x";', 'reject "again";',
                  'require "vacation"; vacation "away";', 'redirect "a@b.example";'):
        script = ('require ["reject", "fileinto", "vacation"];\n' + 'reject "no";\n' +
                  other.split(";", 1)[-1] if other.startswith("require") else
                  'require "reject"; reject "no";\n' + other)
        o = outcome(script)
        assert o.error and o.keep and o.actions == [], script
        o = outcome(script.replace('reject "no";\n', '') + '\nreject "no";')
        assert o.error and o.keep and o.actions == [], script
    o = outcome('require ["reject", "enotify"]; discard; notify "mailto:a@b.example";'
                ' reject "no";')
    assert o.error is None and [type(a).__name__ for a in o.actions] == ["Notify", "Reject"]


def test_vacation_action():
    o = outcome('require "vacation";\nif header :contains "subject" "cyrus" {\n'
                '    vacation "I\'m out -- send mail to cyrus-bugs";\n} else {\n'
                '    vacation "I\'m out -- call me at +1 304 555 0123";\n}')
    assert o.keep and len(o.actions) == 1
    v = o.actions[0]
    assert isinstance(v, Vacation) and v.reason.endswith("555 0123") and v.seconds == 7 * 86400
    assert v.handle
    o = outcome('require "vacation";\nvacation :days 23 :addresses ["tjs@example.edu",\n'
                '   "ts4z@landru.example.edu"]\n   "I\'m away until October 19.\n'
                '   If it\'s an emergency, call 911, I guess." ;')
    v = o.actions[0]
    assert v.seconds == 23 * 86400 and v.addresses == ("tjs@example.edu",
                                                        "ts4z@landru.example.edu")
    o = outcome('require "vacation";\nvacation :mime :subject "Gone fishing" :from '
                '"me@example.com" :handle "h1" text:\nContent-Type: text/plain\n\nBack soon.\n.\n;')
    v = o.actions[0]
    assert v.mime and v.subject == "Gone fishing" and v.from_addr == "me@example.com"
    assert v.handle == "h1" and v.reason.startswith("Content-Type")
    o = outcome('require "vacation"; vacation :days 0 "x";')
    assert o.actions[0].seconds == 86400
    assert outcome('require "vacation"; vacation "a"; vacation "b";').error


def test_imap4flags_examples():
    # RFC 5232 section 7
    o = outcome('require ["imap4flags", "fileinto"];\n'
                'if header :contains "from" "coyote" {\n'
                '   setflag "\\\\Deleted";\n   fileinto "INBOX.sent";\n}')
    assert o.actions == [FileInto("INBOX.sent", ("\\Deleted",))]
    o = outcome('require ["imap4flags"];\naddflag "\\\\Seen \\\\Flagged";\n'
                'removeflag "\\\\seen";\nkeep;')
    assert o.actions == [Keep(("\\Flagged",))]
    o = outcome('require ["imap4flags", "fileinto"];\nsetflag "a";\n'
                'fileinto :flags "\\\\Answered b" "X";\naddflag "c";')
    assert o.actions == [FileInto("X", ("\\Answered", "b"))]
    assert o.keep is False and o.keep_flags == ("a", "c")
    o = outcome('require ["imap4flags"]; addflag ["$Junk", "x"];')
    assert o.keep and o.keep_flags == ("$Junk", "x")
    o = outcome('require ["imap4flags", "variables"]; set "f" "";\naddflag "f" "one";\n'
                'addflag "f" ["two", "one"];\nif hasflag :is "f" "two" { keep :flags "${f}"; }')
    assert o.actions == [Keep(("one", "two"))]
    o = outcome('require "imap4flags"; setflag "a b";\n'
                'if hasflag :contains "a" { setflag "found"; }')
    assert o.keep_flags == ("found",)


def test_runtime_error_keeps():
    o = outcome('require ["fileinto", "variables"]; set "m" ""; fileinto "${m}";')
    assert o.error and o.keep and o.actions == []


def test_stop_ends_the_script():
    o = outcome('require "fileinto"; fileinto "A"; stop; fileinto "B";')
    assert o.actions == [FileInto("A")]


def test_imap4flags_last_flag_list_wins_and_invalid_flags_are_ignored():
    o = outcome('require ["imap4flags", "fileinto"];\nfileinto :flags "a" "X";\n'
                'fileinto :flags "b" "X";\nkeep :flags "c";\nkeep :flags "d";')
    assert o.actions == [FileInto("X", ("b",)), Keep(("d",))]
    o = outcome('require "imap4flags";\n'
                'addflag ["\\\\Recent \\\\Seen", "", "caf\u00e9 ok(no) $Junk", "  a   b "];')
    assert o.keep_flags == ("\\Seen", "$Junk", "a", "b")


def test_vacation_implicit_handle_is_taken_before_expansion():
    script = compile('require ["vacation", "variables"];\nif header :matches "subject" "*" {\n'
                     '    vacation :subject "Automatic response to: ${1}"\n'
                     '             "I\'m away -- send mail to foo in my absence";\n}')
    handles = {run(script, Context(data=f"Subject: {s}\r\n\r\nx".encode())).actions[0].handle
               for s in ("one", "two")}
    assert len(handles) == 1
    other = outcome('require "vacation"; vacation "I\'m away";').actions[0].handle
    assert other not in handles


# --- any text: compile raises SieveError or gives a script that runs -------------

TOKENS = ['require', '["fileinto", "variables", "imap4flags", "regex", "relational", "body",'
          ' "mime", "foreverypart", "editheader", "date", "index", "envelope", "vacation"]',
          ';', '{', '}', '(', ')', ',', '[', ']', 'if', 'elsif', 'else', 'header', 'address',
          'envelope', 'exists', 'size', ':over', '10', '1K', 'allof', 'anyof', 'not', 'true',
          ':is', ':contains', ':matches', ':regex', ':count', '"ge"', ':comparator',
          '"i;ascii-numeric"', '"subject"', '"*"', '"${1}"', '"a(b"', 'fileinto', 'keep',
          'discard', 'redirect', '"a@b.example"', 'set', '"x"', ':lower', 'foreverypart',
          'break', 'addheader', 'deleteheader', ':index', ':last', 'date', '"year"', 'setflag',
          'hasflag', 'body', ':raw', 'vacation', ':days', 'text:\n..x\n.\n', 'stop', '#c\n',
          '/* x */', '"\\"', '"', '\n', '\xe9', '9999999999999999999999G']


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_any_token_soup_compiles_or_fails_cleanly(tokens):
    text = " ".join(tokens)
    try:
        script = compile(text)
    except SieveError as e:
        assert e.line >= 1 and e.message
        return
    o = run(script, Context(data=MSG, recipient="x+y@z.example"))
    assert o.error is None or not o.error.startswith("internal")


def test_crlf_scripts_and_multiline_strings():
    script = ('require ["reject"];\r\n# comment\r\nif true {\r\n  reject text: # why\r\n'
              'line one\r\n..dotted\r\n.\r\n;\r\n}\r\n')
    assert outcome(script).actions == [Reject("line one\r\n.dotted\r\n")]
    assert outcome('require "reject"; reject text:\n.\n;').actions == [Reject("")]
    assert err_line('require "reject";\r\n\r\nreject text: oops\r\nx\r\n.\r\n;') == 3


RFC5232_EXTENDED = """#
# Example Sieve Filter
# Declare any optional features or extension used by the script
#
require ["fileinto", "imap4flags", "variables"];

#
# Move large messages to a special mailbox
#
if size :over 1M
        {
        addflag "MyFlags" "Big";
        if header :is "From" "boss@company.example.com"
                   {
# The message will be marked as "\\Flagged Big" when filed into
# mailbox "Big messages"
                   addflag "MyFlags" "\\\\Flagged";
                   }
        fileinto :flags "${MyFlags}" "Big messages";
        }

if header :is "From" "grandma@example.net"
        {
        addflag "MyFlags" ["\\\\Answered", "$MDNSent"];
        fileinto :flags "${MyFlags}" "GrandMa";
        }

#
# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter folder
#
if header :is "Sender" "owner-ietf-mta-filters@example.org"
        {
        set "MyFlags" "\\\\Flagged $Work";
# Message will have both "\\Flagged" and $Work flags
        keep :flags "${MyFlags}";
        }

#
# Keep all messages to or from people in my company
#
elsif anyof address :domain :is ["From", "To"] "company.example.com"
        {
        keep :flags "${MyFlags}"; # keep in "Inbox" folder
        }

# Try to catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (not address :all :contains
               ["To", "Cc"] "me@company.example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        remove "MyFlags" "\\\\Flagged";
        fileinto :flags "${MyFlags}" "spam";
        }
else
        {
        # Move all other external mail to "personal"
        # folder.
        fileinto :flags "${MyFlags}" "personal";
        }
"""


def test_rfc5232_extended_example():
    # as published it calls "remove": an unknown command, reported on its line
    line = RFC5232_EXTENDED.split("\n").index('        remove "MyFlags" "\\\\Flagged";') + 1
    assert err_line(RFC5232_EXTENDED) == line
    s = compile(RFC5232_EXTENDED.replace('remove "MyFlags"', 'removeflag "MyFlags"'))

    def flags_of(*lines, size=0):
        return run(s, Context(data=headers(*lines) + b"x" * size)).actions

    big = flags_of("From: boss@company.example.com", "To: me@company.example.com", size=1 << 20)
    assert big[0] == FileInto("Big messages", ("Big", "\\Flagged"))
    assert big[1] == Keep(("Big", "\\Flagged"))
    assert flags_of("From: grandma@example.net", "To: me@company.example.com") == [
        FileInto("GrandMa", ("\\Answered", "$MDNSent")), Keep(("\\Answered", "$MDNSent"))]
    assert flags_of("Sender: owner-ietf-mta-filters@example.org", "From: x@y.example") == [
        Keep(("\\Flagged", "$Work"))]
    assert flags_of("From: x@y.example", "To: other@z.example") == [FileInto("spam")]
    assert flags_of("From: x@y.example", "To: a@b.example", "Cc: me@company.example.com") == [
        FileInto("personal")]


def test_rfc5232_hasflag_examples():
    def t(test, value="NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk"):
        return not outcome('require ["imap4flags", "variables", "relational",'
                           ' "comparator-i;ascii-numeric"];\n'
                           f'set "MyVar" "{value}"; setflag "A B";\n'
                           f'if {test} {{ discard; }}').keep
    assert t('hasflag :is "b A"') and t('hasflag ["b","A"]')
    for key in ('"Junk"', '"forward"', '["label", "forward"]', '["junk", "forward"]',
                '"junk forward"'):
        assert t(f'hasflag :contains "MyVar" {key}'), key
    assert not t('hasflag :contains "MyVar" "label"')
    assert not t('hasflag :contains "MyVar" ["label1", "label2"]')
    assert not outcome('require ["imap4flags", "variables", "relational",'
                       ' "comparator-i;ascii-numeric"];\nset "MyFlags" "A B";\n'
                       'if hasflag :count "ge" :comparator "i;ascii-numeric" "MyFlags" "2"'
                       ' { discard; }').keep


def test_rfc5230_examples():
    o = outcome('require "vacation";\nif header :contains "subject" "lunch" {\n'
                '    vacation :handle "ran-away" "I\'m out and can\'t meet for lunch";\n'
                '} else {\n    vacation :handle "ran-away" "I\'m out";\n}')
    assert o.actions[0].handle == "ran-away" and o.actions[0].reason == "I'm out"
    o = outcome('require "vacation";\nvacation :mime text:\nContent-Type: multipart/alternative;'
                ' boundary=foo\n\n--foo\n\nI\'m at the beach relaxing.  Mmmm, surf...\n\n--foo\n'
                'Content-Type: text/html; charset=us-ascii\n\n<HTML><BODY>beach</BODY></HTML>\n\n'
                '--foo--\n.\n;')
    v = o.actions[0]
    assert v.mime and v.reason.startswith("Content-Type: multipart/alternative") and o.keep
    script = ('require "vacation";\nif header :contains "from" "boss@example.edu" {\n'
              '    redirect "pleeb@isp.example.org";\n} else {\n'
              '    vacation "Sorry, I\'m away, I\'ll read your\nmessage when I get around to it.";\n}')
    o = run(compile(script), Context(data=headers("From: boss@example.edu")))
    assert o.actions == [Redirect("pleeb@isp.example.org")] and not o.keep
    o = run(compile(script), Context(data=headers("From: x@example.edu")))
    assert o.actions[0].reason == "Sorry, I'm away, I'll read your\nmessage when I get around to it."
    o = run(compile('require "vacation";\n'
                    'if header :contains ["accept-language", "content-language"] "en"\n{\n'
                    '    vacation "I am away this week.";\n} else {\n'
                    '    vacation "Estoy ausente esta semana.";\n}'),
            Context(data=headers("Content-Language: en-GB")))
    assert o.actions[0].reason == "I am away this week."
    script = compile('require "vacation";\n'
                     'if address :matches "from" "*@ourdivision.example.com"\n{\n'
                     '    vacation :subject "Gone fishing"\n'
                     '             "Having lots of fun! Back in a day or two!";\n} else {\n'
                     '    vacation :subject "Je suis parti cette semaine"\n'
                     '             "Je lirai votre message quand je retourne.";\n}')
    o = run(script, Context(data=headers("From: Ann <ann@ourdivision.example.com>")))
    assert o.actions[0].subject == "Gone fishing"
    o = run(script, Context(data=headers("From: jean@ailleurs.example.fr")))
    assert o.actions[0].subject == "Je suis parti cette semaine"


@pytest.mark.parametrize("text,value", [
    ("$${hex:40}", "$@"), ("${hex: 40 }", "@"), ("${HEX: 40}", "@"), ("${hex:40", "${hex:40"),
    ("${hex:400}", "${hex:400}"), ("${hex:4${hex:30}}", "${hex:40}"),
    ("${unicode:40}", "@"), ("${ unicode:40}", "${ unicode:40}"), ("${UNICODE:40}", "@"),
    ("${UnICoDE:0000040}", "@"), ("${Unicode:40}", "@"), ("${Unicode:Cool}", "${Unicode:Cool}"),
    ("${unicode:200000}", None), ("${Unicode:DF01}", None),
])
def test_encoded_character_rfc5228_section_2_4_2_4(text, value):
    script = f'require ["encoded-character", "fileinto"];\nfileinto "x{text}";'
    if value is None:
        assert err_line(script) == 2
        return
    assert outcome(script).actions == [FileInto("x" + value)]
    o = outcome('require "encoded-character";\nif header :contains "Subject" "$${hex:24 24}"'
                ' {\n   discard;\n}', headers("Subject: pay $$$ now"))
    assert not o.keep


def test_rfc5228_comment_examples():
    script = 'if size :over 100k { # this is a comment\n   discard;\n}'
    assert outcome(script).keep
    assert not outcome(script, headers("S: x") + b"y" * 200000).keep
    o = outcome('if size :over 100K { /* this is a comment\n   this is still a comment */'
                ' discard /* this is a comment\n   */ ;\n}', headers("S: x") + b"y" * 200000)
    assert not o.keep and o.actions == []
