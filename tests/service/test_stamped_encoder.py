"""The publisher's alert body, encoded in two halves before the commit and stamped after it."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.alerts import transition
from vitalwatch.delivery.payloads import WallClock, alert_payload, encode, iso_utc, stamped_encoder
from vitalwatch.engine.outputs import AlertState, Priority

STAMP = "2026-12-06T02:10:00.123Z"


def stamped_the_old_way(payload: dict[str, Any], sent_utc: str) -> bytes:
    """What the publisher sent before: a copy with sent_utc set, encoded whole."""
    body = dict(payload)
    body["sent_utc"] = sent_utc
    return encode(body)


@pytest.mark.parametrize("state", list(AlertState))
@pytest.mark.parametrize("priority", list(Priority))
def test_an_alert_body_is_byte_for_byte_the_whole_encoding(state: AlertState, priority: Priority) -> None:
    tr = transition("chair-1-000007", 3, state, priority=priority, message='SpO2 "84" % \u2264 90 %')
    payload = alert_payload(tr, site="clinic-a", wall=WallClock(1_765_000_000.0))
    sent = iso_utc(datetime.now(UTC))
    assert stamped_encoder(payload)(sent) == stamped_the_old_way(payload, sent)


def _value(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(9 if depth < 2 else 6)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return rng.randint(-(10**6), 10**6)
    if pick == 2:
        return rng.choice([rng.uniform(-1e3, 1e3), math.inf, -math.inf, math.nan, 0.1])
    if pick in (3, 4, 5):
        return "".join(rng.choice('ab"\\\n\u00e9\u2264{},:') for _ in range(rng.randrange(6)))
    if pick in (6, 7):
        return {str(_key(rng)): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _key(rng: random.Random) -> str:
    # around "sent_utc" on both sides, the key itself, and keys sorting before/after everything
    return rng.choice(
        [
            "",
            "a",
            "schema",
            "seq",
            "sent",
            "sent_ut",
            "sent_utc",
            "sent_utca",
            "sent_utd",
            "site",
            "state",
            "z",
            "\u00e9",
            "A",
            "_x",
            "s",
        ]
    ) + rng.choice(["", "1", "_"])


def test_random_payloads_on_every_side_of_the_stamp_encode_the_same() -> None:
    """Keys before and after sent_utc (either side empty), a sent_utc already there (replaced),
    nested values, quotes and non-ASCII text, and non-finite numbers (which become null)."""
    rng = random.Random(20261206)
    sides = set()
    for _ in range(3000):
        payload = {_key(rng): _value(rng) for _ in range(rng.randrange(7))}
        if rng.random() < 0.2:
            payload["schema"] = rng.choice(["vitalwatch.alert/1", "other", 5])
        sides.add((any(k < "sent_utc" for k in payload), any(k > "sent_utc" for k in payload)))
        assert stamped_encoder(payload)(STAMP) == stamped_the_old_way(payload, STAMP), payload
    assert sides == {(False, False), (False, True), (True, False), (True, True)}
