"""The serial I/O edge: the only module that imports ``serial``.

Opens any pyserial URL (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, ``socket://host:port``,
``rfc2217://...``) non-blocking and waits for bytes with ``loop.add_reader`` on the port's
file descriptor, so a slow or silent monitor never blocks the event loop. Every pyserial
or OS failure becomes a :class:`~vitalwatch.errors.DeviceUnavailable` carrying the device
id and port; the link loop decides what to do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select

import serial

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.errors import DeviceUnavailable

__all__ = ["SerialPort"]

# Large enough for a burst of 100 Hz binary frames or a whole HL7 message, small enough
# that one read never holds the loop for long.
READ_CHUNK = 4096


class SerialPort:
    """One open port; ``await read()`` returns bytes as they arrive."""

    def __init__(self, port: serial.SerialBase, *, device_id: str, url: str) -> None:
        self._port = port
        self._device_id = device_id
        self._url = url
        self._pending = b""
        # A local tty (not socket:// or rfc2217://) is read with one os.read(): pyserial's read()
        # adds a select() and a timeout object per call, a third of the read path's cost.
        self._fd: int | None = port.fileno() if isinstance(port, serial.Serial) else None
        self._poll: select.poll | None = None  # read_if_ready's, made at its first call

    @classmethod
    async def open(cls, url: str, settings: SerialSettings, *, device_id: str) -> SerialPort:
        """Open ``url``; a socket:// connect may take a moment, so it runs in a thread."""

        def _open() -> serial.SerialBase:
            return serial.serial_for_url(
                url,
                baudrate=settings.baudrate,
                bytesize=settings.bytesize,
                parity=settings.parity.value,
                stopbits=settings.stopbits,
                timeout=0,
                write_timeout=0,
                exclusive=True if url.startswith("/") else None,
            )

        try:
            port = await asyncio.to_thread(_open)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceUnavailable(f"cannot open: {exc}", device_id=device_id, port=url) from exc
        return cls(port, device_id=device_id, url=url)

    def _error(self, what: str, exc: BaseException) -> DeviceUnavailable:
        return DeviceUnavailable(f"{what}: {exc}", device_id=self._device_id, port=self._url)

    async def read(self, wait_s: float | None) -> bytes:
        """Bytes available now, waiting up to ``wait_s`` seconds for some (b"" when none came)."""
        loop = asyncio.get_running_loop()
        try:
            fd = self._port.fileno()
        except (serial.SerialException, OSError, AttributeError) as exc:
            raise self._error("port has no file descriptor", exc) from exc
        ready: asyncio.Future[None] = loop.create_future()

        def _wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, _wake)
        try:
            # asyncio.wait (unlike wait_for) leaves the future alone on timeout.
            await asyncio.wait({ready}, timeout=wait_s)
        finally:
            loop.remove_reader(fd)
        if not ready.done() or ready.cancelled():
            return b""
        try:
            data: bytes = self._port.read(READ_CHUNK)
        except (serial.SerialException, OSError) as exc:
            raise self._error("read failed (adapter unplugged or peer closed)", exc) from exc
        if not data:
            # Readable but nothing to read: the other end hung up (pty master closed).
            raise self._error("read failed", EOFError("end of stream"))
        return data

    def fileno(self) -> int:
        """The port's file descriptor, for a reader kept on the loop for the whole session."""
        try:
            fd: int = self._port.fileno()
        except (serial.SerialException, OSError, AttributeError) as exc:
            raise self._error("port has no file descriptor", exc) from exc
        return fd

    def read_nowait(self) -> bytes:
        """What is there now, without waiting (b"" when nothing); DeviceUnavailable at end of stream.

        For a caller that already knows the descriptor is readable (``loop.add_reader``): a
        readable port that gives no bytes means the other end hung up (pty master closed).
        """
        try:
            if self._fd is not None:
                data: bytes = os.read(self._fd, READ_CHUNK)
            else:
                data = self._port.read(READ_CHUNK)
        except BlockingIOError:
            return b""  # a spurious wake-up: nothing there after all
        except (serial.SerialException, OSError) as exc:
            raise self._error("read failed (adapter unplugged or peer closed)", exc) from exc
        if not data:
            raise self._error("read failed", EOFError("end of stream"))
        return data

    def read_if_ready(self) -> bytes:
        """What is there now (b"" when nothing), for a caller that does not know whether the port
        is readable: the link's read-pause timer, which reads a streaming port without handing it
        back to the loop. A port with no bytes reads b"" on a tty, the same as a hung-up one, so
        it is asked first (one ``poll`` with no wait); a hang-up raises as in :meth:`read_nowait`.
        """
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.fileno(), select.POLLIN)
        try:
            ready = self._poll.poll(0)
        except OSError as exc:
            raise self._error("poll failed", exc) from exc
        return self.read_nowait() if ready else b""

    def write(self, data: bytes) -> None:
        """Queue bytes for the device; what the port cannot take now is kept for later."""
        self._pending += data
        if not self._pending:
            return
        try:
            written = self._port.write(self._pending)
        except serial.SerialTimeoutException:
            written = 0
        except (serial.SerialException, OSError) as exc:
            raise self._error("write failed", exc) from exc
        self._pending = self._pending[written or 0 :]

    @property
    def has_pending_writes(self) -> bool:
        return bool(self._pending)

    async def close(self) -> None:
        """Close the port; pyserial's socket close sleeps, so it runs in a thread."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._port.close)
