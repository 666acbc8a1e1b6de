"""Configuration of network HL7 devices (``url = "mllp://..."``): every mistake named by its key."""

from __future__ import annotations

import pytest

from vitalwatch.config import parse_config
from vitalwatch.errors import ConfigError


def config(*devices: dict[str, object], beds: int = 1) -> dict[str, object]:
    return {
        "site": "clinic-a",
        "beds": [{"id": f"chair-{n}", "devices": list(devices)} for n in range(1, beds + 1)],
    }


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(p) for p in info.value.problems]


def test_network_devices_parse_with_normalised_keys() -> None:
    cfg = parse_config(
        {
            "site": "clinic-a",
            "beds": [
                {
                    "id": "chair-1",
                    "devices": [
                        {
                            "id": "mon",
                            "driver": "hl7",
                            "url": "mllp://0.0.0.0:2575",
                            "eui64": "00-a0-c9-ff-fe-00-00-01",
                        }
                    ],
                },
                {
                    "id": "chair-2",
                    "devices": [
                        {
                            "id": "mon",
                            "driver": "hl7",
                            "url": "mllp://0.0.0.0:2575",
                            "location": "ICU^^BED2^^",
                        }
                    ],
                },
            ],
        }
    )
    first, second = cfg.beds[0].devices[0], cfg.beds[1].devices[0]
    assert (first.eui64, first.location, first.role) == ("00A0C9FFFE000001", None, "multi")
    assert (second.eui64, second.location) == (None, "ICU^^BED2")


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ({"url": "mllp://0.0.0.0:2575"}, "beds[0].devices[0].url: an mllp:// device needs eui64 or location"),
        (
            {"url": "mllp://0.0.0.0", "eui64": "00A0C9FFFE000001"},
            "beds[0].devices[0].url: must be mllp://HOST:PORT",
        ),
        (
            {"url": "mllp://0.0.0.0:0", "eui64": "00A0C9FFFE000001"},
            "beds[0].devices[0].url: port must be 1-65535",
        ),
        (
            {"url": "mllp://0.0.0.0:70000", "eui64": "00A0C9FFFE000001"},
            "beds[0].devices[0].url: port must be",
        ),
        ({"url": "mllp://0.0.0.0:2575", "eui64": "XYZ"}, "beds[0].devices[0].eui64: must be 16 hex digits"),
        ({"url": "mllp://0.0.0.0:2575", "location": "^^"}, "beds[0].devices[0].location: must not be empty"),
        (
            {"url": "mllp://0.0.0.0:2575", "location": "A^^1", "eui64": "00A0C9FFFE000001"},
            "beds[0].devices[0].location: give eui64 or location, not both",
        ),
        (
            {"url": "/dev/ttyUSB0", "eui64": "00A0C9FFFE000001"},
            "beds[0].devices[0].eui64: only for a network HL7",
        ),
        (
            {"url": "mllp://0.0.0.0:2575", "location": "A", "options": {"framing": "none"}},
            'beds[0].devices[0].options: framing = "none" cannot be used',
        ),
    ],
)
def test_each_mistake_is_named_by_its_key(device: dict[str, object], expected: str) -> None:
    problems = problems_of(config({"id": "mon", "driver": "hl7", **device}))
    assert any(p.startswith(expected) for p in problems), problems


def test_an_mllp_url_needs_the_hl7_driver() -> None:
    problems = problems_of(
        config({"id": "mon", "driver": "masimo", "url": "mllp://0.0.0.0:2575", "location": "A"})
    )
    assert "beds[0].devices[0].driver: an mllp:// url needs the hl7 driver, got 'masimo'" in problems


def test_one_key_routes_to_one_device_per_port_and_one_address_per_port() -> None:
    data = {
        "site": "clinic-a",
        "beds": [
            {
                "id": "chair-1",
                "devices": [{"id": "m", "driver": "hl7", "url": "mllp://0.0.0.0:2575", "location": "A^^1"}],
            },
            {
                "id": "chair-2",
                "devices": [{"id": "m", "driver": "hl7", "url": "mllp://0.0.0.0:2575", "location": "A^^1"}],
            },
            {
                "id": "chair-3",
                "devices": [{"id": "m", "driver": "hl7", "url": "mllp://127.0.0.1:2575", "location": "B"}],
            },
            # The same key on another port is another listener: allowed.
            {
                "id": "chair-4",
                "devices": [{"id": "m", "driver": "hl7", "url": "mllp://0.0.0.0:2576", "location": "A^^1"}],
            },
        ],
    }
    problems = problems_of(data)
    assert problems == [
        "beds[1].devices[0].location: 'A^^1' already routes to beds[0].devices[0] on port 2575",
        "beds[2].devices[0].url: port 2575 is already a listener on 0.0.0.0 (beds[0].devices[0].url)",
    ]
