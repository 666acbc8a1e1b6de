"""sd_notify over a real AF_UNIX datagram socket (path and abstract); a no-op outside systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitalwatch.ops.sdnotify import MAX_STATUS_CHARS, Notifier, notify, watchdog_interval


def receive(sock: socket.socket) -> set[str]:
    """The assignments of one datagram, as systemd would parse them."""
    data = sock.recv(4096)
    return set(data.decode().split("\n"))


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a file path, like /run/systemd/notify."""
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(2.0)
        yield sock, address


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace; NOTIFY_SOCKET spells it with a leading '@'."""
    name = f"vitalwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        yield sock, "@" + name


def test_ready_with_status_reaches_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    """READY=1 and STATUS arrive together in one datagram."""
    sock, address = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("2 beds, 3 devices")
    assert {"READY=1", "STATUS=2 beds, 3 devices"} == receive(sock)


def test_every_message_reaches_an_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    """'@name' addresses the abstract namespace (leading NUL), as systemd passes it in containers."""
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert {"READY=1"} == receive(sock)
    assert notifier.watchdog()
    assert {"WATCHDOG=1"} == receive(sock)
    assert notifier.status("broker unreachable")
    assert {"STATUS=broker unreachable"} == receive(sock)
    assert notifier.stopping()
    assert {"STOPPING=1"} == receive(sock)


def test_module_notify_reads_the_environment(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """notify() uses $NOTIFY_SOCKET of the process, upper-casing keys."""
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify(ready=1)
    assert {"READY=1"} == receive(sock)


def test_status_is_one_bounded_line(path_socket: tuple[socket.socket, str]) -> None:
    """A multi-line or huge status is folded to one line so it cannot inject other assignments."""
    sock, address = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.status("line one\nREADY=1\n" + "x" * 1000)
    (assignment,) = receive(sock)
    assert assignment.startswith("STATUS=line one READY=1 x")
    assert MAX_STATUS_CHARS == len(assignment) - len("STATUS=")


def test_newline_in_a_raw_value_is_refused(path_socket: tuple[socket.socket, str]) -> None:
    """send() refuses a value that would split into a second assignment."""
    _, address = path_socket
    with pytest.raises(ValueError, match="newline"):
        Notifier({"NOTIFY_SOCKET": address}).send(STATUS="a\nREADY=1")


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd nothing is sent and nothing raises."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notify(READY=1)


def test_unsupported_address_is_a_no_op() -> None:
    """A relative path or a vsock address is not ours to use: disabled rather than an error."""
    assert not Notifier({"NOTIFY_SOCKET": "relative/notify"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_vanished_socket_returns_false(tmp_path: Path) -> None:
    """systemd gone (or the socket removed): the send fails quietly, the daemon keeps running."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert notifier.enabled
    assert not notifier.watchdog()


def test_watchdog_interval_is_half_the_timeout() -> None:
    """WATCHDOG_USEC=15 s means a ping every 7.5 s; our own PID or no PID both apply."""
    assert 7.5 == watchdog_interval({"WATCHDOG_USEC": "15000000"})
    assert 7.5 == watchdog_interval({"WATCHDOG_USEC": "15000000", "WATCHDOG_PID": str(os.getpid())})


def test_watchdog_interval_none_when_not_ours_or_absent() -> None:
    """Another PID's watchdog, no watchdog, zero or garbage: no pinging."""
    other_pid = str(os.getpid() + 1)
    assert watchdog_interval({"WATCHDOG_USEC": "15000000", "WATCHDOG_PID": other_pid}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "15000000", "WATCHDOG_PID": "me"}) is None


def test_a_full_receiver_queue_never_blocks_the_sender(tmp_path: Path) -> None:
    """A reader that stopped reading (queue full) makes send() return False at once, not hang."""
    import time as _time

    path = tmp_path / "full.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = _time.monotonic()
        results = [notifier.watchdog() for _ in range(2000)]
        assert _time.monotonic() - started < 5.0
        assert results[0] is True and results[-1] is False
    finally:
        receiver.close()
