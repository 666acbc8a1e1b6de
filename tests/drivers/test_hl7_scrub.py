"""Debug dumps of HL7 bytes never show a patient-identifying segment, wherever the dump is cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vitalwatch.drivers.hl7 import Hl7Driver
from vitalwatch.drivers.mllp import encode_block

MESSAGE = (
    b"MSH|^~\\&|MON|ICU|VW|CLINIC|20261129101500||ORU^R01^ORU_R01|42|P|2.6\r"
    b"PID|||SIM-0001^^^VITALWATCH^PI||SIMULATED^PATIENT||19700101|F\r"
    b"PV1||I|ICU^^BED4\r"
    b"NK1|1|RELATIVE^NEXT^OF^KIN\r"
    b"OBR|1|||182777000^monitoring of patient^SCT\r"
    b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|97|262688^MDC_DIM_PERCENT^MDC|||||R\r"
)
STREAM = encode_block(MESSAGE) * 3
SECRETS = (b"SIM-0001", b"SIMULATED", b"PATIENT", b"19700101", b"RELATIVE", b"BED4")


def test_whole_message_keeps_observations_and_loses_identifiers() -> None:
    scrubbed = Hl7Driver.scrub(STREAM)
    assert b"OBX|1|NM|150456" in scrubbed and b"PID|<scrubbed>" in scrubbed
    for secret in SECRETS:
        assert secret not in scrubbed


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(STREAM)), st.integers(0, len(STREAM)))
def test_any_slice_of_the_stream_is_scrubbed(a: int, b: int) -> None:
    """A ring buffer starts and ends anywhere: no identifier survives (a fragment of one may not be whole)."""
    start, end = sorted((a, b))
    scrubbed = Hl7Driver.scrub(STREAM[start:end])
    for secret in SECRETS:
        assert secret not in scrubbed


def test_a_dump_starting_inside_the_pid_segment_is_cut() -> None:
    """Text like ``ENT||19700101`` inside PID looks like a segment; it must not survive."""
    start = MESSAGE.index(b"ENT||19700101")
    scrubbed = Hl7Driver.scrub(MESSAGE[start:])
    assert scrubbed.startswith(b"<partial>")
    assert b"19700101" not in scrubbed


def test_a_message_with_its_own_field_separator_is_scrubbed() -> None:
    """MSH-1 may declare '#' (or any byte): segments are recognised by the message's own separator."""
    message = (
        b"MSH#^~\\&#MON#ICU#VW#CLINIC#20261129101500##ORU^R01#42#P#2.6\r"
        b"PID###MRN123456^^^HOSP^MR##DOE^JOHN^Q##19700101\r"
        b"OBX#1#NM#150456^MDC_PULS_OXIM_SAT_O2^MDC##97#262688^MDC_DIM_PERCENT^MDC\r"
    )
    scrubbed = Hl7Driver.scrub(encode_block(message))
    for secret in (b"MRN123456", b"DOE", b"JOHN", b"19700101"):
        assert secret not in scrubbed
    assert b"PID#<scrubbed>" in scrubbed and b"OBX#1#NM#150456" in scrubbed


def test_a_pid_right_after_a_form_feed_is_scrubbed() -> None:
    dump = MESSAGE + b"\x0cPID|||MRN777^^^HOSP^MR||ROE^RICHARD\r" + MESSAGE
    scrubbed = Hl7Driver.scrub(dump)
    for secret in (b"MRN777", b"ROE", b"RICHARD", *SECRETS):
        assert secret not in scrubbed


def test_unknown_segments_are_blanked_and_measurements_kept() -> None:
    """A site's own Z-segment may carry anything: only the known measurement segments are shown."""
    dump = MESSAGE + b"ZPI|NICKNAME^BOBBY|ROOM 12\r"
    scrubbed = Hl7Driver.scrub(dump)
    assert b"BOBBY" not in scrubbed and b"ZPI|<scrubbed>" in scrubbed
    assert b"MSH|^~\\&|MON|ICU|VW|CLINIC" in scrubbed
    assert b"OBR|1|||182777000" in scrubbed
