"""The clinical consequence: an impossible value between real ones must not hide a desaturation.

Before plausibility checks, SpO2 80 % with every fourth HL7 message saying 150 % raised no alarm in
60 s: each 150 was a valid sample above the limit and reset the sustained timer. Now the 150 is an
invalid sample, which pauses that timer without resetting it (``BedEngine._on_sample``).
"""

from __future__ import annotations

from vitalwatch.drivers.hl7 import Hl7Driver
from vitalwatch.drivers.mllp import encode_block
from vitalwatch.engine.outputs import Priority
from vitalwatch.engine.testing import EngineHarness


def message(n: int, spo2: int) -> bytes:
    text = (
        f"MSH|^~\\&|MON|ICU|VW|H|20240101120000||ORU^R01^ORU_R01|{n}|P|2.6\r"
        f"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1|{spo2}|262688^MDC_DIM_PERCENT^MDC|||||R\r"
        f"OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r"
    )
    return encode_block(text.encode())


def run(every_fourth: int, seconds: int = 60) -> EngineHarness:
    """Baseline and infusion as usual, then one HL7 message a second: SpO2 80, every 4th ``every_fourth``."""
    h = EngineHarness(devices={"oximeter": "spo2", "nibp": "nibp", "monitor": "spo2"})
    h.standard_baseline()
    driver = Hl7Driver()
    start = h.now
    for k in range(seconds):
        t = start + 1 + k
        spo2 = every_fourth if k % 4 == 3 else 80
        for event in driver.feed(message(k, spo2), t):
            h.outputs += h.engine.observe("monitor", event, t)
        for device in h.engine.devices:
            h.engine.bytes_seen(device, t)
        h.tick(t)
    return h


def test_spo2_80_with_every_fourth_message_at_150_raises_the_high_alarm() -> None:
    h = run(every_fourth=150)
    raised = [a for a in h.raised("spo2_low") if a.priority is Priority.HIGH]
    assert raised, "the implausible 150 % samples hid a real desaturation"
    assert raised[0].value == 80.0


def test_a_real_recovery_sample_still_resets_the_timer() -> None:
    """The control: a *valid* 97 % every fourth second keeps breaking the evidence (no HIGH alarm),
    so the test above passes because 150 is refused, not because the alarm ignores resets."""
    h = run(every_fourth=97)
    assert [a for a in h.raised("spo2_low") if a.priority is Priority.HIGH] == []
