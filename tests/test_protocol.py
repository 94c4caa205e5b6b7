"""Issue 3 §1-2: the sans-I/O protocol layer (reply parser, command formatting and quoting).

No sockets here: bytes go into :class:`ReplyParser`, command text comes out of
:func:`format_command`, and the fake hypervisor's copy of dynamips' tokenizer (checked against
the real binary by ``test_conformance.py``) tells what dynamips would read from that text.
"""

from __future__ import annotations

import random

import pytest

from dynamips_mgr.dynamips.hypervisor.protocol import (
    SIGNATURES,
    ProtocolViolation,
    Reply,
    ReplyParser,
    check_text,
    format_command,
)
from dynamips_mgr.errors import ArgumentError
from dynamips_mgr.testing.fake_hypervisor import tokenize

STREAM = (
    b"101 0x60606f54 [33]\r\n101 0x6025d4b8 [45]\r\n100-OK\r\n"
    b"206-unable to create VM instance 'R1'\r\n"
    b"100-VM 'R1' created\r\n"
    b"101 Warning: no console port defined for VM 'R2'\r\n209-unable to start VM instance 'R2'\r\n"
    b"100-OK\r\n"
)
EXPECTED = [
    (100, ["0x60606f54 [33]", "0x6025d4b8 [45]"]),
    (206, ["unable to create VM instance 'R1'"]),
    (100, ["VM 'R1' created"]),
    (209, ["Warning: no console port defined for VM 'R2'", "unable to start VM instance 'R2'"]),
    (100, []),
]


def summary(replies: list[Reply]) -> list[tuple[int, list[str]]]:
    return [(reply.code, reply.lines) for reply in replies]


def test_replies_split_at_every_byte_boundary_parse_the_same():
    assert summary(ReplyParser().feed(STREAM)) == EXPECTED
    for cut in range(1, len(STREAM)):
        parser = ReplyParser()
        replies = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert summary(replies) == EXPECTED, cut
        assert parser.idle
    for cut1 in range(1, 40):  # and at every pair of boundaries in the first reply
        for cut2 in range(cut1, 60):
            parser = ReplyParser()
            parts = (STREAM[:cut1], STREAM[cut1:cut2], STREAM[cut2:])
            replies = [reply for part in parts for reply in parser.feed(part)]
            assert summary(replies) == EXPECTED


def test_one_byte_at_a_time_and_empty_reads():
    parser = ReplyParser()
    replies = []
    for index in range(len(STREAM)):
        assert parser.feed(b"") == []  # an empty read changes nothing
        replies += parser.feed(STREAM[index : index + 1])
        if index < len(STREAM) - 1:
            assert len(replies) < len(EXPECTED)
    assert summary(replies) == EXPECTED


def test_long_multi_line_reply_in_random_chunks():
    lines = [f"101 {i}: n{i}" for i in range(150)]
    data = ("\r\n".join([*lines, "100-OK"]) + "\r\n").encode()
    rng = random.Random(3)
    parser = ReplyParser()
    replies: list[Reply] = []
    position = 0
    while position < len(data):
        size = rng.randint(1, 64)
        replies += parser.feed(data[position : position + size])
        if position + size < len(data):
            assert not parser.idle and not replies  # nothing before the final line
        position += size
    assert summary(replies) == [(100, [f"{i}: n{i}" for i in range(150)])]


def test_several_replies_in_one_chunk_keep_their_order():
    data = b"".join(f"100-{i}\r\n".encode() for i in range(20))
    assert [r.lines for r in ReplyParser().feed(data)] == [[str(i)] for i in range(20)]


@pytest.mark.parametrize(
    "raw, code, lines, text",
    [
        (b"100-OK\r\n", 100, [], "OK"),
        (b"100-0.2.14-amd64\r\n", 100, ["0.2.14-amd64"], "0.2.14-amd64"),
        (b"100-2\r\n", 100, ["2"], "2"),
        (b"101 12\r\n100-OK\r\n", 100, ["12"], "OK"),
        (b"100-\r\n", 100, [""], ""),
        (b"100-OK\n", 100, [], "OK"),  # a bare LF ends a line too
        (b"208-unable to find object 'x'\r\n", 208, ["unable to find object 'x'"], None),
        (b"200-Parse error: unexpected quote\r\n", 200, ["Parse error: unexpected quote"], None),
    ],
)
def test_reply_lines_codes_and_error_text(raw, code, lines, text):
    (reply,) = ReplyParser().feed(raw)
    assert (reply.code, reply.lines) == (code, lines)
    assert reply.ok is (code < 200)
    if not reply.ok:  # a 2xx reply carries the text of its final line, prefix removed
        assert reply.text == lines[-1]
    else:
        assert reply.text == text


def test_error_reply_text_is_the_final_line_only():
    data = b"101 Warning: no console port defined for VM 'R2'\r\n209-unable to start VM\r\n"
    (reply,) = ReplyParser().feed(data)
    assert not reply.ok and reply.text == "unable to start VM"


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not a reply\r\n",
        b"300-OK\r\n",
        b"10-OK\r\n",
        b"100OK\r\n",
        b"\r\n",
        b"1000-OK\r\n",
    ],
)
def test_a_line_that_is_not_protocol_is_a_violation(garbage):
    parser = ReplyParser()
    with pytest.raises(ProtocolViolation):
        parser.feed(b"101 first\r\n" + garbage)


def test_invalid_utf8_is_replaced_not_fatal():
    (reply,) = ReplyParser().feed(b"100-caf\xe9\r\n")
    assert reply.lines == ["caf\ufffd"]


# -- command formatting ----------------------------------------------------------------------
def test_names_and_paths_are_quoted_other_arguments_bare():
    assert format_command("vm create", "R 1", 1, "c7200") == 'vm create "R 1" 1 c7200'
    assert (
        format_command("vm set_ios", "R1", "/images/my dir/c7200 ü.image")
        == 'vm set_ios "R1" "/images/my dir/c7200 ü.image"'
    )
    assert format_command("vm set_config", "R1", "a.cfg", "") == 'vm set_config "R1" "a.cfg" ""'
    assert format_command("nio create_udp", "udp-1", 10000, "127.0.0.1", 10001) == (
        "nio create_udp udp-1 10000 127.0.0.1 10001"
    )
    assert format_command("vm set_ghost_file", "R1", "c7200 test.image-256.ghost") == (
        'vm set_ghost_file "R1" "c7200 test.image-256.ghost"'  # C16: always quoted
    )
    assert format_command("hypervisor version") == "hypervisor version"


FORBIDDEN = ['"', "\r", "\n", "\0", "\t", "\x1b", "\x7f"]


@pytest.mark.parametrize("bad", FORBIDDEN)
def test_text_dynamips_cannot_carry_is_refused_naming_the_argument(bad):
    with pytest.raises(ArgumentError) as caught:
        format_command("vm create", f"R{bad}1", 1, "c7200")
    assert caught.value.status == 400
    assert caught.value.field == "vm create argument 1 (name)"
    assert "vm create argument 1 (name)" in caught.value.message
    with pytest.raises(ArgumentError) as caught:
        format_command("vm set_config", "R1", "ok.cfg", f"/tmp/x{bad}y.cfg")
    assert caught.value.field == "vm set_config argument 3 (path)"
    with pytest.raises(ArgumentError) as caught:
        check_text("name", f"SW{bad}")
    assert caught.value.field == "name" and "'name'" in caught.value.message


def test_injection_attempt_is_refused_before_any_text_exists():
    """C20: the classic payload cannot become a second command."""
    payload = 'SW3" 1 c7200\nhypervisor stop\nethsw create "SW4'
    with pytest.raises(ArgumentError):
        format_command("ethsw create", payload)
    with pytest.raises(ArgumentError):
        format_command("ethsw rename", "SW1", payload)


def test_text_that_is_not_valid_unicode_is_refused():
    with pytest.raises(ArgumentError, match="Unicode"):
        format_command("ethsw create", "SW\udc801")


def test_empty_names_are_refused_but_empty_paths_allowed():
    with pytest.raises(ArgumentError):
        format_command("vm create", "", 1, "c7200")
    assert format_command("vm set_ios", "R1", "") == 'vm set_ios "R1" ""'


@pytest.mark.parametrize("value", [True, "1", 1.5, None, "0x10"])
def test_integers_must_be_integers(value):
    with pytest.raises(ArgumentError, match="not an integer") as caught:
        format_command("vm set_ram", "R1", value)
    assert caught.value.field == "vm set_ram argument 2 (int)"


def test_negative_and_large_integers_are_sent_as_written():
    assert format_command("vm set_ram", "R1", -1) == 'vm set_ram "R1" -1'
    assert format_command("vm set_ram", "R1", 2**40) == f'vm set_ram "R1" {2**40}'


@pytest.mark.parametrize("token", ["udp 1", 'udp"1', "udp#1", "udp!1", "", "a\nb", "tap\t0"])
def test_tokens_must_be_plain_words(token):
    with pytest.raises(ArgumentError, match="plain word"):
        format_command("nio create_null", token)


@pytest.mark.parametrize("token", ["udp-1", "nio_udp.2", "0x88A8", "en10mb", "eth0:1", "a+b@c%d/e"])
def test_plain_tokens_pass(token):
    assert format_command("nio create_null", token) == f"nio create_null {token}"


def test_unknown_commands_and_wrong_arity_are_programming_errors():
    with pytest.raises(ValueError, match="unknown hypervisor command"):
        format_command("vm explode", "R1")
    with pytest.raises(ValueError, match="takes"):
        format_command("vm create", "R1", 1)
    with pytest.raises(ValueError, match="takes"):
        format_command("vm get_status", "R1", "extra")


SAMPLES = {
    "name": "R 1 #!ü\\",  # spaces, comment characters and a backslash are safe inside quotes
    "path": "/tmp/a dir/#x!/ü.cfg",
    "int": 42,
    "token": "udp-7",
}


@pytest.mark.parametrize("command", sorted(SIGNATURES))
def test_every_command_reaches_dynamips_with_exactly_its_arguments(command):
    """What dynamips' tokenizer reads back is the module, the verb and each value, unchanged:
    no argument is split, merged, cut at a comment character or turned into a new command."""
    kinds = [kind.rstrip("?") for kind in SIGNATURES[command].split()]
    values = [SAMPLES[kind] for kind in kinds]
    line = format_command(command, *values)
    assert "\n" not in line and "\r" not in line
    assert tokenize(line) == [*command.split(), *map(str, values)]
