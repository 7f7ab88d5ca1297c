"""A fault-injecting TCP proxy on loopback, for the remote's fault tests.

    with FaultProxy("127.0.0.1", port) as proxy:   # proxy.endpoint: http://127.0.0.1:PORT
        proxy.mode = "reset"                       # the next connections are reset at once

Modes (read at each new connection, and by running ones at each relay step):
  pass        relay both ways
  reset       accept, then close with RST (SO_LINGER 0): "connection reset by peer"
  refuse      stop listening: "connection refused" (the endpoint is down)
  stall       accept and relay nothing while the mode stays stall (the client's timeouts must
              fire); a connection accepted then is relayed once the mode is pass again
  slow        relay upstream-bound bytes in 1 KiB steps with a short pause each
  drop:N      relay, then reset the connection once N bytes went upstream in it
Threads only; ``close`` stops the listener and every connection.
"""

from __future__ import annotations

import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, host: str, port: int, mode: str = "pass"):
        self.target = (host, port)
        self.mode = mode
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # listener ----------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            if self.mode == "refuse":
                self._listener.close()
                while self.mode == "refuse" and not self._closed.is_set():
                    time.sleep(0.02)
                if self._closed.is_set():
                    return
                self._listener = socket.create_server(("127.0.0.1", self.port))
            self._listener.settimeout(0.1)
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.append(sock)

    def _serve(self, client: socket.socket) -> None:
        mode = self.mode
        if mode in ("reset", "refuse"):   # refuse: accepted before the listener closed, not served
            _reset(client)
            return
        if mode == "stall":
            while self.mode == "stall" and not self._closed.wait(0.05):
                pass
            if self.mode != "pass" or self._closed.is_set():
                client.close()
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        self._track(upstream)
        limit = int(mode.split(":")[1]) if mode.startswith("drop:") else None
        threading.Thread(target=self._relay, args=(upstream, client, None), daemon=True).start()
        self._relay(client, upstream, limit)

    def _relay(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(1024 if self.mode == "slow" else 65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[:limit - sent])
                    _reset(src)
                    _reset(dst)
                    return
                if self.mode == "slow":
                    time.sleep(0.01)
                dst.sendall(data)
                sent += len(data)
        except OSError:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self._thread.join()
        with self._lock:
            for s in self._conns:
                try:
                    s.close()
                except OSError:
                    pass


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
