"""SunTech Advantage driver: the ak-git vectors, the cuff cycle state machine, noise and fuzz."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    feed_bytewise,
    feed_chunks,
    feed_whole,
    observations,
    only_events,
    problems,
    statuses,
)
from vitalwatch.drivers.base import Driver, MeasurementStarter
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.drivers.suntech import (
    COMPLETE_PACKET,
    GET_BP_DATA,
    GET_CUFF_PRESSURE,
    START_BP,
    SuntechDriver,
    SuntechResult,
    decode_bp_data,
    encode_bp_data,
    encode_cuff_pressure,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "nibp" / "suntech_advantage_vectors_ak-git.hex"


def load_vectors() -> list[tuple[bytes, str]]:
    """(bytes, comment) per line of the hex file."""
    out: list[tuple[bytes, str]] = []
    for line in VECTORS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        hex_part, _, comment = line.partition("#")
        out.append((bytes.fromhex(hex_part), comment.strip()))
    return out


def vector(prefix: str) -> bytes:
    """The first vector whose comment starts with ``prefix``."""
    return next(data for data, comment in load_vectors() if comment.startswith(prefix))


CUFF_258 = vector("cuff pressure")
CUFF_BAD = vector("same with corrupted checksum")
COMPLETE = vector("'K'")
BP_DATA = vector("BP data")


def measuring_driver(**options: float | None) -> SuntechDriver:
    """A driver in the middle of a cycle started at t=0."""
    drv = SuntechDriver(**options)  # type: ignore[arg-type]
    drv.start_measurement()
    drv.on_timer(0.0)
    drv.data_to_send()
    return drv


def nibp(events: list[Event]) -> dict[str, float | None]:
    return {o.kind: o.value for o in observations(events) if o.kind.startswith("nibp_")}


def test_driver_satisfies_contracts() -> None:
    """The link and the engine find the driver and the NIBP start hook by protocol."""
    drv = SuntechDriver()
    assert isinstance(drv, Driver)
    assert isinstance(drv, MeasurementStarter)
    assert (drv.serial.baudrate, drv.serial.bytesize, drv.serial.stopbits) == (9600, 8, 1)


def test_host_command_vectors_match_constants_and_sum_to_zero() -> None:
    """The commands the driver sends are byte for byte the reference ones (NIBPRequest.java)."""
    host = [data for data, _ in load_vectors() if data[0] == 0x3A]
    assert host[:3] == [START_BP, GET_CUFF_PRESSURE, GET_BP_DATA]
    assert all(sum(data) % 256 == 0 for data in host)


def test_cuff_pressure_vector_is_258_mmhg_lsb_first() -> None:
    """``3E 05 02 01 BA`` is 0x0102 = 258 mmHg while a cycle runs."""
    events = measuring_driver().feed(CUFF_258, 1.0)
    assert [Observation("cuff_pressure", 258.0, "mm[Hg]", None)] == events
    assert encode_cuff_pressure(258) == CUFF_258


def test_corrupted_checksum_is_a_problem_never_a_value() -> None:
    """The vector the reference test rejects gives bad_checksum(5) and no observation."""
    events = measuring_driver().feed(CUFF_BAD, 1.0)
    assert [DecodeProblem("bad_checksum", 5)] == events


def test_bp_data_vector_decodes_to_115_74_88_85() -> None:
    """The 24-byte sample: SYS 115, DIA 74, beats 30, status 1, HR 85, MAP 88, error 0."""
    result = decode_bp_data(BP_DATA)
    assert (
        SuntechResult(
            systolic=115,
            diastolic=74,
            mean=88,
            heart_rate=85,
            error_code=0,
            beats=30,
            bp_status=1,
            test_codes=bytes.fromhex("0000000000003107"),
        )
        == result
    )
    assert encode_bp_data(result) == BP_DATA


def test_whole_cycle_from_vectors() -> None:
    """start -> measuring on -> cuff 258 -> 'K' -> GET_BP_DATA -> BP -> measuring off."""
    drv = SuntechDriver()
    drv.start_measurement()
    assert drv.data_to_send() == START_BP
    assert [DeviceStatus("measuring", True)] == drv.on_timer(10.0)
    assert drv.next_deadline() == 11.0
    assert drv.on_timer(11.0) == []
    assert drv.data_to_send() == GET_CUFF_PRESSURE
    assert [Observation("cuff_pressure", 258.0, "mm[Hg]", None)] == drv.feed(CUFF_258, 11.1)
    assert drv.feed(COMPLETE, 30.0) == []
    assert drv.data_to_send() == GET_BP_DATA
    events = drv.feed(BP_DATA, 30.1)
    assert nibp(events) == {
        "nibp_systolic": 115.0,
        "nibp_diastolic": 74.0,
        "nibp_mean": 88.0,
        "nibp_pulse_rate": 85.0,
    }
    assert [DeviceStatus("measuring", False)] == statuses(events)
    assert drv.next_deadline() is None
    assert drv.data_to_send() == b""


def test_three_way_feeding_with_junk_gives_the_same_events() -> None:
    """Whole, byte-at-a-time and random chunks agree; junk before/after is one problem each."""
    stream = b"\x00\x11junk" + CUFF_258 + CUFF_BAD + COMPLETE + BP_DATA + b"\xff\x01trailing"
    runs = [feed_whole(SuntechDriver, stream), feed_bytewise(SuntechDriver, stream)]
    runs += [feed_chunks(SuntechDriver, stream, seed=s) for s in range(5)]
    for events in runs:
        assert (nibp(events)) == {
            "nibp_systolic": 115.0,
            "nibp_diastolic": 74.0,
            "nibp_mean": 88.0,
            "nibp_pulse_rate": 85.0,
        }
        assert [
            DecodeProblem("junk", 6),
            DecodeProblem("bad_checksum", 5),
            DecodeProblem("junk", 10),
        ] == problems(events)
        # Not measuring (no start): a stray cuff pressure reply is not reported.
        assert [o for o in observations(events) if o.kind == "cuff_pressure"] == []


def test_error_code_is_cuff_error_not_a_blood_pressure() -> None:
    """A result with error code 3 switches cuff_error on with the code; the next good one clears it."""
    drv = measuring_driver()
    failed = encode_bp_data(SuntechResult(0, 0, 0, 0, error_code=3, bp_status=2))
    events = drv.feed(failed, 25.0)
    assert [
        DeviceStatus("cuff_error", True, {"error_code": 3, "bp_status": 2}),
        DeviceStatus("measuring", False),
    ] == events
    drv.start_measurement()
    drv.on_timer(100.0)
    events = drv.feed(encode_bp_data(SuntechResult(150, 95, 113, 70)), 125.0)
    assert nibp(events) == {
        "nibp_systolic": 150.0,
        "nibp_diastolic": 95.0,
        "nibp_mean": 113.0,
        "nibp_pulse_rate": 70.0,
    }
    assert [DeviceStatus("cuff_error", False), DeviceStatus("measuring", False)] == statuses(events)


def test_cycle_that_never_completes_times_out_as_cuff_error() -> None:
    """No 'K' within cycle_timeout_s: cuff_error with reason timeout, measuring off, polling stops."""
    drv = measuring_driver(cycle_timeout_s=180.0)
    events: list[Event] = []
    t = 0.0
    while (deadline := drv.next_deadline()) is not None and deadline <= 200.0:
        t = deadline
        events += drv.on_timer(t)
    assert t == 180.0
    assert [
        DeviceStatus("cuff_error", True, {"reason": "timeout", "seconds": 180.0}),
        DeviceStatus("measuring", False),
    ] == events
    assert drv.next_deadline() is None


def test_result_request_is_retried_until_the_answer_comes() -> None:
    """After 'K', a lost GET_BP_DATA answer is asked again every result_retry_s."""
    drv = measuring_driver(result_retry_s=2.0)
    drv.feed(COMPLETE, 30.0)
    assert drv.data_to_send() == GET_BP_DATA
    assert drv.next_deadline() == 32.0
    drv.on_timer(32.0)
    assert drv.data_to_send() == GET_BP_DATA


def test_cuff_pressure_reported_at_most_once_a_second() -> None:
    """Replies 0.25 s apart give one observation per second."""
    drv = measuring_driver()
    events: list[Event] = []
    for i in range(10):
        events += drv.feed(encode_cuff_pressure(100 + i), 1.0 + 0.25 * i)
    assert [o.value for o in observations(events)] == [100.0, 104.0, 108.0]


def test_start_is_ignored_while_a_cycle_runs() -> None:
    """A second start during a cycle sends nothing (it could abort the running one)."""
    drv = measuring_driver()
    drv.start_measurement()
    assert drv.data_to_send() == b""


def test_auto_interval_starts_cycles_after_one_interval() -> None:
    """interval_s=300: no cuff at connect; the first START_BP one interval after the clock is seen."""
    drv = SuntechDriver(interval_s=300.0)
    assert drv.next_deadline() == 0.0
    assert drv.on_timer(5.0) == []
    assert drv.data_to_send() == b""
    assert drv.next_deadline() == 305.0
    assert [DeviceStatus("measuring", True)] == drv.on_timer(305.0)
    assert drv.data_to_send() == START_BP


def test_complete_while_idle_still_fetches_the_result() -> None:
    """A cycle started on the module itself still ends in a reading."""
    drv = SuntechDriver()
    assert drv.feed(COMPLETE, 1.0) == []
    assert drv.data_to_send() == GET_BP_DATA
    assert nibp(drv.feed(BP_DATA, 1.1))["nibp_systolic"] == 115.0


def test_eof_reports_partial_packet_and_clears_statuses() -> None:
    """A cut-off packet at EOF is truncated_packet; measuring switches off."""
    drv = measuring_driver()
    assert drv.feed(BP_DATA[:10], 1.0) == []
    assert [DecodeProblem("truncated_packet", 10), DeviceStatus("measuring", False)] == drv.feed_eof()


@settings(max_examples=60, deadline=None)
@given(
    sys_=st.integers(0, 0xFFFF),
    dia=st.integers(0, 0xFFFF),
    mean=st.integers(0, 0xFFFF),
    hr=st.integers(0, 255),
)
def test_round_trip_bp_data_fields(sys_: int, dia: int, mean: int, hr: int) -> None:
    """Every 16-bit field the encoder writes, the packet decoder reads back (plausible or not)."""
    packet = encode_bp_data(SuntechResult(sys_, dia, mean, hr))
    assert sum(packet) % 256 == 0
    assert decode_bp_data(packet) == SuntechResult(sys_, dia, mean, hr)


@settings(max_examples=60, deadline=None)
@given(
    sys_=st.integers(2, 320),
    dia_below=st.integers(1, 319),
    mean=st.integers(1, 320),
    hr=st.integers(0, 255),
    junk=st.binary(max_size=20).map(lambda b: b.replace(b">", b"")),
)
def test_round_trip_bp_data(sys_: int, dia_below: int, mean: int, hr: int, junk: bytes) -> None:
    """Every plausible reading the encoder writes, the driver reads back (after leading junk too)."""
    dia = min(dia_below, sys_ - 1)
    packet = encode_bp_data(SuntechResult(sys_, dia, mean, hr))
    assert {
        "nibp_systolic": float(sys_),
        "nibp_diastolic": float(dia),
        "nibp_mean": float(mean),
        "nibp_pulse_rate": float(hr),
    } == nibp(SuntechDriver().feed(junk + packet, 0.0))


@settings(max_examples=60, deadline=None)
@given(mmhg=st.integers(0, 320))
def test_round_trip_cuff_pressure(mmhg: int) -> None:
    """Every plausible cuff pressure the encoder writes comes back as that many mmHg."""
    assert [mmhg] == [o.value for o in observations(measuring_driver().feed(encode_cuff_pressure(mmhg), 1.0))]


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), seed=st.integers(0, 1000))
def test_random_bytes_never_raise(data: bytes, seed: int) -> None:
    """Arbitrary input in arbitrary chunks gives only events, during and outside a cycle."""
    for make in (SuntechDriver, measuring_driver):
        events = feed_chunks(make, data, seed=seed, max_chunk=40, timers=True)
        assert only_events(list(events))


def test_buffer_is_bounded_by_longest_packet() -> None:
    """A false start with the largest length byte waits for at most 67 bytes, then resyncs."""
    drv = SuntechDriver()
    events = drv.feed(b">\x43" + CUFF_258 * 20 + COMPLETE, 0.0)
    assert DecodeProblem("bad_checksum", 0x43) in events
    assert drv.data_to_send() == GET_BP_DATA  # the COMPLETE after the garbage was still seen
    assert COMPLETE_PACKET == COMPLETE
