"""``vitalwatch decode`` over every sample file in tests/vectors/, and over random bytes, per family.

The driver tests assert the decoded values; this file checks the command a field engineer runs:
each sample goes to the driver it belongs to (binary files as bytes, hex dumps with ``--hex``,
options as ``--option KEY=VALUE``), exits 0 and gives at least one observation. Files that are
not device output on their own (host commands, an ACK, PDF-wrapped manual text, fragments) are
listed with what they do give instead, and :data:`SAMPLES` must name every file so a new vector
cannot be forgotten.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.cli import main
from vitalwatch.drivers import DRIVERS
from vitalwatch.drivers.nonin import FloatValues, encode_frame

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# file under tests/vectors -> (driver, extra arguments, what it must give)
# "observation": exit 0 and >= 1 observation; "status": >= 1 status and no observation;
# "nothing": exit 0 and no observation (not device output on its own; why in the comment).
SAMPLES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "contec_berrymed/cms50dplus_v7_realtime_stream_headrotor.bin": ("contec", (), "observation"),
    "contec_berrymed/cms50dplus_v7_capture_headrotor.txt": ("contec", ("--hex",), "observation"),
    "hl7/comen_nc_monitor_pcd01.hl7": ("hl7", (), "observation"),
    "hl7/linkwatch_pcd01_nibp.txt": ("hl7", (), "observation"),
    "hl7/mindray_vs900_demo_pcd01.txt": ("hl7", (), "observation"),
    "hl7/northern_monitor_pcd01_invalid_values.txt": ("hl7", (), "observation"),
    "hl7/ge_mural_pcd04_oru_r40.txt": ("hl7", (), "status"),  # PCD-04 alarm: statuses only
    "hl7/linkwatch_pcd01_nibp_ack.txt": ("hl7", (), "nothing"),  # the host's ACK, not a result
    # GE B40 manual fragments: no MSH on their own (joined with the head below).
    "hl7/ge_b40_example1_head_reconstructed.hl7": ("hl7", (), "nothing"),
    "hl7/ge_b40_example_tail_reconstructed.hl7": ("hl7", (), "nothing"),
    "hl7/ge_b40_bp_channel_fragment_reconstructed.hl7": ("hl7", (), "nothing"),
    # Manual text with the PDF's line wraps (test_hl7 unwraps the rows itself).
    "hl7/ge_b40_manual_excerpts_pdfwrapped.txt": ("hl7", (), "nothing"),
    "hl7/philips_efficia_cm_manual_examples.txt": ("hl7", (), "nothing"),
    "masimo/rad8_ascii1_capture_yahnatan.txt": ("masimo", (), "observation"),
    "masimo/rad8_trend_sample_output_manual.txt": ("masimo", (), "observation"),
    "masimo/radical5_example_mdpnp.bin": ("masimo", (), "observation"),
    "masimo/radical7_example_mdpnp.bin": ("masimo", (), "observation"),
    "masimo/radical_variants_nmenon_comments.txt": ("masimo", (), "observation"),
    "nellcor/npb29x_realtime_printout_manual.txt": ("nellcor", (), "observation"),
    "nibp/accutorr3_patient_data_example_manual.txt": ("accutorr", (), "observation"),
    "nibp/suntech_advantage_vectors_ak-git.hex": ("suntech", ("--hex",), "observation"),
    # Host->device command bytes from the 9560 spec: nothing a host would receive.
    "nonin/9560_command_examples_spec.txt": ("nonin", ("--hex",), "nothing"),
    # Six frames, not a whole 25-frame packet (the full packet is decoded below).
    "nonin/oem3_format2_frames_pufferfish_tests.hex": (
        "nonin",
        ("--hex", "--option", "data_format=2"),
        "nothing",
    ),
}
# Not decoded by any VitalWatch driver: Medlab NIBP2010 is not a supported family.
NO_DRIVER = {"nibp/medlab_nibp2010_ascii_forum_examples.txt"}


def decode(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    code = main(["decode", *args])
    out, _ = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()]


def test_every_vector_file_is_listed() -> None:
    """Each file under tests/vectors/ (except the README) has a driver and an expectation here."""
    files = {
        p.relative_to(VECTORS).as_posix() for p in VECTORS.rglob("*") if p.is_file() and p.name != "README.md"
    }
    assert files == set(SAMPLES) | NO_DRIVER


@pytest.mark.parametrize("rel", sorted(SAMPLES))
def test_decode_sample(rel: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The sample decodes with its family's driver: exit 0 and what the file can give."""
    driver, extra, expect = SAMPLES[rel]
    code, events = decode(capsys, "--driver", driver, *extra, str(VECTORS / rel))
    assert 0 == code
    kinds = {e["event"] for e in events}
    if expect == "observation":
        assert "observation" in kinds
    elif expect == "status":
        assert "status" in kinds and "observation" not in kinds
    else:
        assert "observation" not in kinds


def test_every_family_has_a_sample_giving_observations() -> None:
    """nonin and bci and nonin-ascii are covered by the built inputs below."""
    covered = {d for d, _, expect in SAMPLES.values() if expect == "observation"}
    assert set(DRIVERS) - covered == {"nonin", "nonin-ascii", "bci"}


def test_ge_b40_head_and_tail_joined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The GE B40 fragments joined into one message decode to its SpO2 of 100."""
    parts = ("ge_b40_example1_head_reconstructed.hl7", "ge_b40_example_tail_reconstructed.hl7")
    joined = b"".join((VECTORS / "hl7" / p).read_bytes().rstrip(b"\r") + b"\r" for p in parts)
    path = tmp_path / "ge_b40.hl7"
    path.write_bytes(joined)
    code, events = decode(capsys, "--driver", "hl7", str(path))
    assert 0 == code
    assert [100] == [e["value"] for e in events if e["event"] == "observation" and e["kind"] == "spo2"]


def test_nonin_packet_from_sample_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pufferfish frames completed to a 25-frame format #2 packet: SpO2 97, pulse 72, via --option."""
    lines = (VECTORS / "nonin" / "oem3_format2_frames_pufferfish_tests.hex").read_text().splitlines()
    frames = [bytes.fromhex(line) for line in lines if line.strip() and not line.startswith("#")]
    floats = FloatValues(
        hr=72, spo2=97, hr_d=72, spo2_d=97, e_hr=72, e_spo2=97, e_spo2_d=97, e_hr_d=72,
        spo2_fast=97, spo2_bb=97,
    ).to_bytes()  # fmt: skip
    packet = frames[0] + frames[1] + frames[4] + frames[5]
    packet += b"".join(encode_frame(2, 0x80, 0x01, fb) for fb in floats[4:])
    path = tmp_path / "nonin.bin"
    path.write_bytes(packet * 3)
    code, events = decode(capsys, "--driver", "nonin", "--option", "data_format=2", str(path))
    assert 0 == code
    values = {(e["kind"], e["value"]) for e in events if e["event"] == "observation"}
    assert {("spo2", 97), ("pulse_rate", 72)} <= values


def test_contec_protocol_option(capsys: pytest.CaptureFixture[str]) -> None:
    """``--option protocol=new`` reaches the driver: the V7 capture decodes to pulse 65, SpO2 97."""
    path = VECTORS / "contec_berrymed" / "cms50dplus_v7_realtime_stream_headrotor.bin"
    code, events = decode(
        capsys, "--driver", "contec", "--option", "protocol=new", "--option", "consistent_frames=1", str(path)
    )
    assert 0 == code
    assert [("spo2", 97), ("pulse_rate", 65)] == [
        (e["kind"], e["value"]) for e in events if e["event"] == "observation"
    ]


@pytest.mark.parametrize("text", [b"SPO2=097 HR=072\r\n" * 3, b"SPO2=--- HR=---\r\nSPO2=095 HR=101\r\n"])
def test_nonin_ascii_lines(text: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Nonin ASCII format (no public capture in tests/vectors) from the manual's layout."""
    path = tmp_path / "nonin.txt"
    path.write_bytes(text)
    code, events = decode(capsys, "--driver", "nonin-ascii", str(path))
    assert 0 == code
    assert any(e["event"] == "observation" and e["value"] is not None for e in events)


def test_bci_packets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second of BCI packets in the PDF's layout (no capture in tests/vectors): SpO2 98, pulse 75."""
    packet = bytes((0x80 | 8, 0x40, 0x05, 75, 98))
    path = tmp_path / "bci.bin"
    path.write_bytes(packet * 200)  # reports at packets 1 (framing not established yet) and 101
    code, events = decode(capsys, "--driver", "bci", str(path))
    assert 0 == code
    assert ("spo2", 98) in {(e["kind"], e["value"]) for e in events if e["event"] == "observation"}


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_random_bytes_do_not_crash(driver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """64 KiB of random bytes: exit 0 and every line a documented event (no traceback)."""
    path = tmp_path / "noise.bin"
    path.write_bytes(random.Random(driver).randbytes(64 * 1024))
    code, events = decode(capsys, "--driver", driver, str(path))
    assert 0 == code
    assert {e["event"] for e in events} <= {"observation", "status", "problem"}
