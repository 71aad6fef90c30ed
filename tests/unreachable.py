"""A dependency that accepts connections and never answers (tests only).

A refused connection is quick to report; a server that accepts and then says nothing (hung,
or a proxy with nothing behind it) can only be ended by a timeout, so the tests that a
command cannot hang point it here.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class SilentServer:
    """Accepts TCP connections on a loopback port and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._accepted.append(connection)  # held open, never answered

    @property
    def accepted(self) -> int:
        """How many connections it has accepted so far."""
        return len(self._accepted)

    def close(self) -> None:
        """Stop accepting and drop the connections held."""
        self._listener.close()
        for connection in self._accepted:
            connection.close()
