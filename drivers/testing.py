"""Fuzz inputs for every driver family, shipped so ``make fuzz`` (bench/fuzz_drivers.py) and the
bounded fuzz tests draw from one generator.

The three-way feeders (whole, byte by byte, random chunks) and the event filters that driver
tests use live with the other test helpers in tests/helpers.py.
"""

from __future__ import annotations

import random

from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation

__all__ = ["fuzz_driver", "fuzz_input", "fuzz_violations"]


# -- fuzzing ------------------------------------------------------------------------------------
#
# One generator for every family, shared by the bounded fuzz tests in ``make test`` and the long
# run under ``make fuzz`` (bench/fuzz_drivers.py): well-formed messages built with the family's own
# encoder from values over the *whole wire range* (so impossible values such as SpO2 127 or a pulse
# of 999 occur), then mutated (bytes flipped, dropped, repeated), mixed with noise and cut into
# random chunks. A failure prints the seed, which reproduces it.


def _wire_messages(name: str, rng: random.Random) -> bytes:
    """A few well-formed messages of family ``name`` with random wire-range values."""
    from datetime import datetime

    from vitalwatch.drivers import accutorr, bci, contec, masimo, nellcor, nonin, nonin_ascii, suntech
    from vitalwatch.drivers.mllp import encode_block

    def maybe(hi: int) -> int | None:  # a value over the whole wire range, sometimes "no value"
        return None if rng.random() < 0.1 else rng.randint(0, hi)

    out = bytearray()
    for _ in range(rng.randint(1, 6)):
        match name:
            case "masimo":
                out += masimo.encode_line(
                    when=datetime(2024, 1, 1, 12, 0, rng.randint(0, 59)),
                    spo2=maybe(999),
                    pulse_rate=maybe(999),
                    perfusion_index=None if rng.random() < 0.1 else rng.randint(0, 9999) / 100,
                    exc=rng.randint(0, 0xFFFFFF),
                    alarm=rng.randint(0, 0xFFFF),
                    model=rng.choice(["rad8", "radical5", "radical7"]),
                )
            case "nonin-ascii":
                out += nonin_ascii.encode_line(maybe(999), maybe(999), event=rng.random() < 0.2)
            case "nellcor":
                line = nellcor.NellcorLine(
                    time=datetime(1998, 11, 12, 14, 0, rng.randint(0, 59)),
                    spo2=maybe(999),
                    pulse_rate=maybe(999),
                    pa=maybe(999),
                    codes=tuple(rng.sample(sorted(nellcor.STATUS_MAP), rng.randint(0, 2))),
                )
                out += nellcor.format_line(line)
            case "bci":
                for _ in range(rng.randint(1, 120)):
                    strength, pulse, spo2 = rng.randint(0, 15), maybe(255), maybe(127)
                    packet = bci.BciPacket(signal_strength=strength, pulse_rate=pulse, spo2=spo2)
                    out += bci.encode_packet(packet)
            case "contec":
                for _ in range(rng.randint(1, 80)):
                    if rng.random() < 0.5:
                        out += contec.encode_old(contec.OldPacket(pulse_rate=maybe(255), spo2=maybe(127)))
                    else:
                        d = [rng.randint(0, 255) for _ in range(7)]
                        packet7 = contec.V7Packet(data=(d[0], d[1], d[2], d[3], d[4], d[5], d[6]))
                        out += contec.encode_v7(packet7)
            case "nonin":
                floats = nonin.FloatValues(hr=rng.randint(0, 511), spo2=rng.randint(0, 127)).to_bytes()
                for k, value in enumerate(floats):
                    flags = rng.randint(0, 0x3F) & 0x3E
                    status = nonin.ALWAYS | (nonin.SYNC if k == 0 else 0) | flags
                    out += nonin.encode_frame(2, status, rng.randint(0, 255), value)
            case "suntech":
                out += suntech.COMPLETE_PACKET if rng.random() < 0.3 else b""
                out += suntech.encode_cuff_pressure(rng.randint(0, 0xFFFF))
                sys_, dia, mean = rng.randint(0, 0xFFFF), rng.randint(0, 0xFFFF), rng.randint(0, 0xFFFF)
                error = rng.choice([0, 0, 0, rng.randint(0, 255)])
                result = suntech.SuntechResult(sys_, dia, mean, rng.randint(0, 255), error_code=error)
                out += suntech.encode_bp_data(result)
            case "accutorr":
                fields = (maybe(999), maybe(999), maybe(999), maybe(999), maybe(999))
                st0, st1, st2 = rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)
                out += accutorr.encode_patient_data((*fields, st0, st1, st2, maybe(99)))
            case "hl7":
                out += encode_block(_hl7_message(rng).encode("latin-1"))
            case _:
                raise KeyError(f"no fuzz generator for driver {name!r}")
    return bytes(out)


def _hl7_message(rng: random.Random) -> str:
    """An ORU^R01 with a few OBX rows whose values, units and shapes are chosen at random."""
    codes = ["150456", "149530", "150021", "150022", "150023", "150301", "147842", "151562", "150344",
             "0002-4bb8"]  # fmt: skip
    units = ["262688^MDC_DIM_PERCENT^MDC", "264864^MDC_DIM_BEAT_PER_MIN^MDC", "266016^MDC_DIM_MMHG^MDC",
             "MDC_DIM_KILO_PA", "268192^MDC_DIM_DEGC^MDC", "[degF]", "", "x"]  # fmt: skip
    values = ["97", "-40", "150", "262688", "1" + "0" * rng.randint(1, 40), "", "-100", "12.5", ".5", "+3",
              "9" * rng.randint(1, 80), "1e5", "NaN", "inf", "--"]  # fmt: skip
    rows = [
        f"OBX|{i}|{rng.choice(['NM', 'NM', 'ST', ''])}|{rng.choice(codes)}^X^MDC|1.1.1|{rng.choice(values)}|"
        f"{rng.choice(units)}|||||{rng.choice(['R', 'F', 'X', ''])}"
        for i in range(1, rng.randint(1, 8))
    ]
    head = f"MSH|^~\\&|MON|W|VW|H|20240101120000||ORU^R01^ORU_R01|M{rng.randint(0, 999)}|P|2.6"
    return "\r".join([head, "PID|||X", "OBR|1|||x|||20240101120000", *rows]) + "\r"


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(0, 6)):
        if not out:
            break
        at = rng.randrange(len(out))
        match rng.randrange(4):
            case 0:
                out[at] = rng.randrange(256)
            case 1:
                del out[at : at + rng.randint(1, 8)]
            case 2:
                out[at:at] = out[at : at + rng.randint(1, 16)]
            case _:
                out[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(out)


def fuzz_input(name: str, seed: int) -> bytes:
    """Deterministic fuzz bytes for driver ``name`` (well-formed messages, mutated, plus noise)."""
    rng = random.Random(seed)
    data = _wire_messages(name, rng)
    if rng.random() < 0.7:
        data = _mutate(data, rng)
    if rng.random() < 0.2:
        data = rng.randbytes(rng.randint(0, 64)) + data
    return data


def fuzz_driver(name: str, seed: int) -> list[Event]:
    """Feed :func:`fuzz_input` to a fresh driver in random chunks, with timers and starts, then EOF."""
    from vitalwatch.drivers import make_driver
    from vitalwatch.drivers.base import MeasurementStarter

    rng = random.Random(seed ^ 0x5EED)
    data = fuzz_input(name, seed)
    driver = make_driver(name)
    events: list[Event] = []
    now = 0.0
    i = 0
    while i < len(data):
        if isinstance(driver, MeasurementStarter) and rng.random() < 0.3:
            driver.start_measurement()
        events += driver.on_timer(now)
        n = rng.randint(1, 256)
        events += driver.feed(data[i : i + n], now)
        driver.data_to_send()
        now += rng.random()
        i += n
    return events + driver.on_timer(now + 10.0) + driver.feed_eof()


def fuzz_violations(events: list[object]) -> list[str]:
    """What breaks the driver contract in ``events``: non-events, non-finite or implausible values."""
    from vitalwatch.drivers.plausibility import PLAUSIBLE_RANGES

    found: list[str] = []
    for event in events:
        if not isinstance(event, Observation | DeviceStatus | DecodeProblem):
            found.append(f"not an event: {event!r}")
        elif isinstance(event, Observation) and event.value is not None:
            bounds = PLAUSIBLE_RANGES.get(event.kind)
            if bounds is None or not bounds.contains(event.value):
                found.append(f"{event.kind}={event.value!r} outside its plausible range")
    return found
