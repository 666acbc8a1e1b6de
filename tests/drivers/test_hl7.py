"""HL7 PCD-01 driver: every sample under tests/vectors/hl7 decoded with asserted values, ACKs, noise."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    MODES,
    feed,
    observations,
    only_events,
    problems,
)
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event
from vitalwatch.drivers.hl7 import Delimiters, Hl7Driver, escape, parse_ack, parse_ts, unescape
from vitalwatch.drivers.mllp import MllpDeframer, encode_block

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "hl7"
JUNK = b"\x00\xffjunk\r\n"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def values(events: list[Event]) -> list[tuple[str, float | None]]:
    return [(o.kind, o.value) for o in observations(events)]


def decode(data: bytes, mode: str = "whole", **options: object) -> list[Event]:
    def factory() -> Hl7Driver:
        return Hl7Driver(**options)  # type: ignore[arg-type]

    return feed(factory, data, mode, seed=7)


def framed(payload: bytes) -> bytes:
    """The sample as a device would send it: MLLP block with junk before and after."""
    return JUNK + encode_block(payload) + JUNK


# -- samples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_mindray_vs900_demo(mode: str) -> None:
    """Mindray VS900 in demo mode: demo status first, SpO2 100 / PR 80 / PI 12, NIBP 166/100 (122)
    measured at 12:50:08, older than the 12:55:41 message."""
    events = decode(framed(vector("mindray_vs900_demo_pcd01.txt")), mode)
    assert events[1] == DeviceStatus("demo", True)
    assert values(events) == [
        ("spo2", 100.0),
        ("pulse_rate", 80.0),
        ("perfusion_index", 12.0),
        ("nibp_systolic", 166.0),
        ("nibp_mean", 122.0),
        ("nibp_diastolic", 100.0),
    ]
    obs = observations(events)
    assert [o.mdc for o in obs] == [150456, 149530, 150488, 150301, 150303, 150302]
    assert [o.unit for o in obs] == ["%", "/min", "%", "mm[Hg]", "mm[Hg]", "mm[Hg]"]
    assert obs[0].device_time == datetime(2020, 2, 12, 12, 55, 41)
    assert {o.device_time for o in obs[3:]} == {datetime(2020, 2, 12, 12, 50, 8)}
    assert [p.reason for p in problems(events)] == ["garbage", "garbage"]


@pytest.mark.parametrize("mode", MODES)
def test_northern_monitor_invalid_values_and_quirks(mode: str) -> None:
    """-100 is "no reading" (None, never -100); 150031 with sub-id ...150301 is the cuff systolic;
    duplicate set-ids are passed on; the 384.5 temperature is implausible: a problem and None."""
    events = decode(vector("northern_monitor_pcd01_invalid_values.txt"), mode)
    assert values(events) == [
        ("spo2", None),
        ("pulse_rate", None),
        ("temperature", 38.5),
        ("temperature", None),
        ("nibp_systolic", 142.0),
        ("nibp_mean", 114.0),
        ("nibp_diastolic", 100.0),
    ]
    assert observations(events)[4].mdc == 150301
    assert observations(events)[4].device_time == datetime(2025, 6, 12, 9, 33, 19)
    assert observations(events)[0].device_time == datetime(2025, 6, 12, 9, 8, 38)  # from OBR-7
    assert problems(events) == [DecodeProblem("implausible:temperature", 0)]


def test_northern_without_fallback_drops_the_miscoded_row() -> None:
    """With sub_id_fallback off, the 150031 row is not guessed at."""
    events = decode(vector("northern_monitor_pcd01_invalid_values.txt"), sub_id_fallback=False)
    kinds = [k for k, _ in values(events)]
    assert "nibp_systolic" not in kinds
    assert "nibp_mean" in kinds


def test_sentinels_are_configurable() -> None:
    """invalid_values="" turns the sentinel off: -100 then meets the plausibility screen, so it is
    still never a number, but now counted as a problem per value."""
    events = decode(vector("northern_monitor_pcd01_invalid_values.txt"), invalid_values="")
    assert values(events)[:2] == [("spo2", None), ("pulse_rate", None)]
    assert problems(events)[:2] == [
        DecodeProblem("implausible:spo2", 0),
        DecodeProblem("implausible:pulse_rate", 0),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_comen(mode: str) -> None:
    """Comen: two SpO2 channels, resp, temp and NONINV NIBP with a +08:00 time; PID never leaks."""
    events = decode(framed(vector("comen_nc_monitor_pcd01.hl7")), mode)
    assert values(events) == [
        ("spo2", 97.0),
        ("spo2", 97.0),
        ("resp_rate", 20.0),
        ("temperature", 37.0),
        ("nibp_systolic", 120.0),
        ("nibp_diastolic", 80.0),
        ("nibp_mean", 90.0),
    ]
    tz8 = timezone(timedelta(hours=8))
    assert observations(events)[4].device_time == datetime(2025, 6, 10, 1, 51, 27, tzinfo=tz8)
    rendered = repr(events)
    for identifier in ("10006", "lee", "KC261551373G"):
        assert identifier not in rendered


@pytest.mark.parametrize("mode", MODES)
def test_linkwatch_nibp(mode: str) -> None:
    """LinkWatch: NONINV 1500xx NIBP and the NIBP pulse 149546, +02:00 times; header row ignored."""
    events = decode(framed(vector("linkwatch_pcd01_nibp.txt")), mode)
    assert values(events) == [("nibp_systolic", 125.0), ("nibp_diastolic", 80.0), ("nibp_pulse_rate", 66.0)]
    tz2 = timezone(timedelta(hours=2))
    assert {o.device_time for o in observations(events)} == {datetime(2017, 5, 3, 12, 0, tzinfo=tz2)}


def _segments(*names: str) -> bytes:
    return b"".join(vector(n).rstrip(b"\r") + b"\r" for n in names)


@pytest.mark.parametrize("mode", MODES)
def test_ge_b40_head_and_tail(mode: str) -> None:
    """GE B40 manual example (head + tail fragments joined): SpO2 100, two resp rates, two temps."""
    message = _segments("ge_b40_example1_head_reconstructed.hl7", "ge_b40_example_tail_reconstructed.hl7")
    events = decode(framed(message), mode)
    assert values(events) == [
        ("spo2", 100.0),
        ("resp_rate", 18.0),
        ("resp_rate", 30.0),
        ("temperature", 37.1),
        ("temperature", 36.5),
    ]


def test_ge_b40_bp_channel_fragment() -> None:
    """GE B40 p.15 fragment: ECG HR 80 maps; invasive ART pressures and 149522 are not ours."""
    events = decode(
        _segments("ge_b40_example1_head_reconstructed.hl7", "ge_b40_bp_channel_fragment_reconstructed.hl7")
    )
    assert values(events) == [("heart_rate", 80.0)]


def test_ge_fragments_alone_are_not_messages() -> None:
    """Without an MSH the fragments are reported as garbage, not decoded and not acknowledged."""
    driver = Hl7Driver()
    events = driver.feed(vector("ge_b40_example_tail_reconstructed.hl7")) + driver.feed_eof()
    assert observations(events) == []
    assert [p.reason for p in problems(events)] == ["garbage"]
    assert driver.data_to_send() == b""


def test_ge_manual_pdf_wrapped_text_never_raises() -> None:
    """The wrapped manual text is mostly noise: only events, no observations."""
    events = decode(vector("ge_b40_manual_excerpts_pdfwrapped.txt"))
    assert only_events(list(events))
    assert observations(events) == []


def _philips_obx_lines() -> list[str]:
    """OBX rows of the Philips manual examples, with the PDF line wraps undone."""
    rows: list[str] = []
    for line in vector("philips_efficia_cm_manual_examples.txt").decode().splitlines():
        if line.startswith("###") or line.startswith(("MSH", "MSA", "OBR")):
            rows.append("")
        elif line.startswith("OBX"):
            rows.append(line)
        elif rows and rows[-1]:
            rows[-1] += line
    return [r.replace("<CR>", "") for r in rows if r.startswith("OBX|") and "MDIL|" in r]


def test_philips_efficia_mdil_rows() -> None:
    """Philips MDIL codes map: SpO2 98, NBP 122/85/98 at 12:35, pulse 80, resp 20; the typo'd temp
    code is not guessed; empty NBP -> None; OBX-11 X -> None."""
    text = "MSH|^~\\&|MONITOR||||20120510123600||ORF^R04|MONITORABC000000002D|P|2.4\r"
    payload = (text + "\r".join(_philips_obx_lines()) + "\r").encode()
    driver = Hl7Driver()
    events = driver.feed(encode_block(payload)) + driver.feed_eof()
    assert values(events) == [
        ("spo2", 98.0),
        ("nibp_systolic", 122.0),
        ("nibp_diastolic", 85.0),
        ("nibp_mean", 98.0),
        ("pulse_rate", 80.0),
        ("resp_rate", 20.0),
        ("nibp_systolic", None),
        ("nibp_diastolic", None),
        ("nibp_mean", None),
        ("spo2", None),
        ("heart_rate", None),
    ]
    assert observations(events)[1].device_time == datetime(2012, 5, 10, 12, 35)
    assert observations(events)[0].device_time == datetime(2012, 5, 10, 12, 36)  # MSH-7 fallback
    assert b"MSA|AA|MONITORABC000000002D\r" in driver.data_to_send()


def test_ge_mural_pcd04_alarm() -> None:
    """ORU^R40: the alert becomes device_alarm on, with text and priority; ACKed as ACK^R40^ACK."""
    driver = Hl7Driver()
    events = driver.feed(framed(vector("ge_mural_pcd04_oru_r40.txt")))
    alarm = [e for e in events if isinstance(e, DeviceStatus)]
    assert len(alarm) == 1
    assert alarm[0].code == "device_alarm"
    assert alarm[0].active
    assert alarm[0].detail["text"] == "HYPERTENSION-Alert Recheck BP"
    assert alarm[0].detail["priority"] == "PM"
    assert alarm[0].detail["phase"] == "update"
    assert "Robert" not in repr(events)
    ack = driver.data_to_send()
    assert b"|ACK^R40^ACK|" in ack
    assert b"MSA|AA|75063efd-903a-4033-a70c-6c6488e93859\r" in ack


def test_alarm_decoding_can_be_turned_off() -> None:
    """alarms=False: the R40 is acknowledged but yields no status."""
    driver = Hl7Driver(alarms=False)
    events = driver.feed(encode_block(vector("ge_mural_pcd04_oru_r40.txt")))
    assert events == []
    assert b"MSA|AA|" in driver.data_to_send()


# -- segment ends, escapes, units, timestamps --------------------------------------------------------


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
@pytest.mark.parametrize("framing", ["mllp", "none"])
def test_segment_end_variants(end: bytes, framing: str) -> None:
    """CR, LF and CRLF segment ends decode the same, MLLP-framed or plain."""
    text = vector("mindray_vs900_demo_pcd01.txt").replace(b"\r\n", b"\n").replace(b"\n", end)
    data = encode_block(text) if framing == "mllp" else text
    assert [v for _, v in values(decode(data))] == [100.0, 80.0, 12.0, 166.0, 122.0, 100.0]


def test_two_plain_messages_in_one_file() -> None:
    """Plain files: two messages back to back both decode and both get an ACK."""
    data = vector("linkwatch_pcd01_nibp.txt") + vector("mindray_vs900_demo_pcd01.txt")
    driver = Hl7Driver(framing="none")
    events = driver.feed(data) + driver.feed_eof()
    assert len(observations(events)) == 9
    assert driver.data_to_send().count(b"MSA|AA|") == 2


def test_plain_message_completes_after_idle() -> None:
    """Without MLLP the last message is complete once the line is idle for plain_idle_s."""
    driver = Hl7Driver(framing="auto", plain_idle_s=0.5)
    assert driver.feed(vector("linkwatch_pcd01_nibp.txt"), 10.0) == []
    assert driver.next_deadline() == 10.5
    assert driver.on_timer(10.2) == []
    assert len(observations(driver.on_timer(10.5))) == 3
    assert driver.next_deadline() is None
    assert driver.data_to_send().startswith(b"MSH|")  # plain in, plain ACK out


CUSTOM = (
    "MSH#*~!@#SENDER####20240101120000##ORU*R01*ORU_R01#9#P#2.6\r"
    "OBX#1#NM#150456*SpO2*MDC##{value}#{unit}\r"
)


def test_delimiters_come_from_each_message() -> None:
    """Non-default delimiters (# * ~ ! @) are read from MSH-1/MSH-2."""
    events = decode(encode_block(CUSTOM.format(value="95", unit="262688*MDC_DIM_PERCENT*MDC").encode()))
    assert values(events) == [("spo2", 95.0)]


def test_escapes_decoded() -> None:
    """\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and hex (multi-byte UTF-8 as one character) decode; formatting drops."""
    d = Delimiters()
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", d) == "a|b^c&d~e\\f"
    assert unescape(r"caf\XC3A9\ \H\bold\N\ x\.br\y", d) == "café bold x\ny"
    assert unescape("no escape", d) == "no escape"
    assert unescape("dangling \\E", d) == "dangling \\E"
    custom = Delimiters("#", "*", "~", "!", "@")
    assert unescape("a!F!b!S!c", custom) == "a#b*c"


def test_escaped_value_and_unit_are_decoded_before_use() -> None:
    """An escaped unit (\\X25\\ = "%") is read after unescaping, so the value is kept."""
    events = decode(encode_block(CUSTOM.format(value="9!X35!", unit="!X25!").encode()))
    assert values(events) == [("spo2", 95.0)]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_escape_round_trip(text: str) -> None:
    """unescape(escape(x)) == x for any text (CR and LF come back as written by \\Xhh\\)."""
    d = Delimiters()
    assert unescape(escape(text, d), d) == text
    assert not set(escape(text, d)) & {"|", "^", "~", "&", "\r"}


def _mindray_with(old: bytes, new: bytes) -> bytes:
    return encode_block(vector("mindray_vs900_demo_pcd01.txt").replace(old, new, 1))


def test_kpa_is_converted_to_mmhg() -> None:
    """A cuff pressure sent in kPa comes out in mm[Hg] with the exact factor, never as kPa."""
    events = decode(_mindray_with(b"|166|266016^MDC_DIM_MMHG^MDC|", b"|22.13|^kPa^UCUM|"))
    assert values(events)[3] == ("nibp_systolic", 165.99)


def test_unknown_or_mismatching_unit_drops_the_value() -> None:
    """A unit we cannot prove is the kind's unit gives a problem, not a number."""
    wrong = decode(_mindray_with(b"|100|262688^MDC_DIM_PERCENT^MDC|", b"|100|266016^MDC_DIM_MMHG^MDC|"))
    assert "spo2" not in [k for k, _ in values(wrong)]
    assert [p.reason for p in problems(wrong)] == ["unit_mismatch:spo2"]
    unknown = decode(_mindray_with(b"|100|262688^MDC_DIM_PERCENT^MDC|", b"|100|999^furlongs^X|"))
    assert [p.reason for p in problems(unknown)] == ["unknown_unit:spo2"]


def test_empty_unit_is_the_kinds_unit() -> None:
    """The 11073 code defines the unit, so an empty OBX-6 keeps the value."""
    events = decode(_mindray_with(b"|100|262688^MDC_DIM_PERCENT^MDC|", b"|100||"))
    assert values(events)[0] == ("spo2", 100.0)


def test_status_x_and_empty_value_are_none() -> None:
    """OBX-11 X or an empty OBX-5 -> value None, never a number."""
    x = decode(_mindray_with(b"|DEMO|||R|||20200212125541||||00A", b"|DEMO|||X|||20200212125541||||00A"))
    assert values(x)[0] == ("spo2", None)
    empty = decode(_mindray_with(b"|100|262688", b"||262688"))
    assert values(empty)[0] == ("spo2", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20200212125541", datetime(2020, 2, 12, 12, 55, 41)),
        ("202002121255", datetime(2020, 2, 12, 12, 55)),
        ("20200212", datetime(2020, 2, 12)),
        ("20170503120000+0200", datetime(2017, 5, 3, 12, 0, tzinfo=timezone(timedelta(hours=2)))),
        ("20210122052031.040+0000", datetime(2021, 1, 22, 5, 20, 31, 40000, tzinfo=UTC)),
        ("20200212125541-0530", datetime(2020, 2, 12, 12, 55, 41, tzinfo=timezone(timedelta(hours=-5.5)))),
        ("2020021325", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_parse_ts(text: str, expected: datetime | None) -> None:
    """HL7 DTM with optional seconds, fraction and offset; invalid dates are None."""
    assert parse_ts(text) == expected


# -- acknowledgements ----------------------------------------------------------------------------


def test_ack_shape_matches_linkwatch_sample() -> None:
    """Our ACK has the LinkWatch response's shape: MSH + MSA|AA|<MSH-10>, same version/processing id,
    sender and receiver swapped, MSH-9 ACK^R01^ACK, MLLP framed like the message."""
    driver = Hl7Driver()
    driver.feed(encode_block(vector("linkwatch_pcd01_nibp.txt")))
    blocks = MllpDeframer().feed(driver.data_to_send())
    assert len(blocks) == 1
    assert isinstance(blocks[0], bytes)
    ours = [s.split("|") for s in blocks[0].decode().split("\r") if s]
    theirs = [s.split("|") for s in vector("linkwatch_pcd01_nibp_ack.txt").decode().splitlines()]
    assert [s[0] for s in ours] == [s[0] for s in theirs] == ["MSH", "MSA"]
    assert ours[1] == theirs[1]
    assert ours[0][1] == theirs[0][1] == "^~\\&"
    assert ours[0][8].split("^")[:2] == theirs[0][8].split("^")[:2] == ["ACK", "R01"]
    assert ours[0][8] == "ACK^R01^ACK"
    assert ours[0][10:12] == theirs[0][10:12] == ["P", "2.6"]
    assert ours[0][4] == "LinkWatchAndroid"  # the sender becomes the receiver
    assert ours[0][6] == "20170503120000+0200"  # deterministic: the message's own time by default


def test_ack_time_from_clock() -> None:
    """With a clock, MSH-7 of the ACK is the clock's time."""
    driver = Hl7Driver(clock=lambda: datetime(2024, 3, 1, 10, 0, tzinfo=UTC))
    driver.feed(encode_block(vector("linkwatch_pcd01_nibp.txt")))
    assert b"|20240301100000+0000||ACK^R01^ACK|" in driver.data_to_send()


def test_malformed_number_is_rejected_with_ae() -> None:
    """A mapped NM value that is not a number (line noise) -> AE with reason and ERR, no observations,
    so the monitor resends the whole message."""
    driver = Hl7Driver()
    events = driver.feed(_mindray_with(b"|100|262688", b"|1?0|262688"))
    assert observations(events) == []
    assert [p.reason for p in problems(events)] == ["rejected: OBX-5 of spo2 is not a number"]
    code, control, text = parse_ack(MllpDeframer().feed(driver.data_to_send())[0])  # type: ignore[arg-type]
    assert (code, control, text) == ("AE", "13", "OBX-5 of spo2 is not a number")


def test_unsupported_type_is_rejected_and_ack_is_never_answered() -> None:
    """ADT^A01 gets AE with an ERR segment; an incoming ACK gets nothing."""
    driver = Hl7Driver()
    driver.feed(encode_block(b"MSH|^~\\&|X||||20240101||ADT^A01^ADT_A01|77|P|2.6\rPID|||1\r"))
    ack = driver.data_to_send()
    assert b"MSA|AE|77|unsupported message type ADT\\S\\A01\r" in ack
    assert b"\rERR|||200^Unsupported message type^HL70357|E|" in ack
    events = driver.feed(encode_block(vector("linkwatch_pcd01_nibp_ack.txt")))
    assert [p.reason for p in problems(events)] == ["unexpected_ack"]
    assert driver.data_to_send() == b""


def test_bad_segment_name_is_rejected() -> None:
    """A corrupted segment name is noise: AE, so the sender repeats the message."""
    driver = Hl7Driver()
    events = driver.feed(_mindray_with(b"OBX|3|", b"O\x01X|3|"))
    assert observations(events) == []
    assert b"MSA|AE|13|bad segment name" in driver.data_to_send()


def test_no_ack_when_disabled() -> None:
    """ack=False (decoding files): nothing to send."""
    driver = Hl7Driver(ack=False)
    driver.feed(encode_block(vector("linkwatch_pcd01_nibp.txt")))
    assert driver.data_to_send() == b""


def test_not_hl7_block_is_a_problem_without_ack() -> None:
    """A block that does not start with MSH cannot be addressed: problem only."""
    driver = Hl7Driver()
    assert driver.feed(encode_block(b"hello")) == [DecodeProblem("not_hl7", 5)]
    assert driver.data_to_send() == b""


# -- fuzz ------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    """Random bytes (auto framing, then MLLP once an SB shows up) only produce events."""
    for framing in ("auto", "none"):
        events = decode(data, framing=framing)
        assert only_events(list(events))


@pytest.mark.parametrize("seed", range(40))
def test_mutated_samples_never_raise(seed: int) -> None:
    """Samples with random byte flips: events only, and values are either a number or None."""
    rng = random.Random(seed)
    sample = bytearray(framed(vector(rng.choice(["mindray_vs900_demo_pcd01.txt", "comen_nc_monitor_pcd01.hl7",
                                                  "northern_monitor_pcd01_invalid_values.txt"]))))
    for _ in range(rng.randint(1, 6)):
        sample[rng.randrange(len(sample))] = rng.randrange(256)
    events = decode(bytes(sample), "chunks")
    assert only_events(list(events))
    assert all(o.value is None or isinstance(o.value, float) for o in observations(events))


def test_no_patient_identifier_anywhere() -> None:
    """PID/PV1 content of every sample never appears in any event."""
    for path in sorted(VECTORS.iterdir()):
        events = decode(path.read_bytes())
        rendered = repr(events)
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("PID|"):
                for name in re.split(r"[|^~&]", line)[3:]:
                    if len(name) > 3:
                        assert name not in rendered, (path.name, name)
