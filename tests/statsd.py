"""A StatsD listener on loopback (UDP, read by a thread): the metric lines a deployment or a benchmark sends."""

from __future__ import annotations

import re
import socket
import threading
import time


class StatsdListener:
    """A UDP socket on loopback, read by a thread: every StatsD line the deployment sends."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self._socket.recv(65536)
            except OSError:
                continue
            self.lines.extend(packet.decode(errors="replace").splitlines())

    def ours(self) -> list[str]:
        return [line for line in list(self.lines) if line.startswith("airflow.cometapi.")]

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.ours():
                if re.fullmatch(pattern, line):
                    return line
            time.sleep(0.2)
        raise AssertionError(f"no StatsD line matching {pattern!r}; ours: {self.ours()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close()
