"""A loopback TCP proxy that can make a server HANG rather than refuse (for S3 brown-outs in tests).

Stopping S3Proxy makes every call fail fast with "connection refused"; a real brown-out is worse: the
load balancer accepts the connection and then nothing comes back. While ``stalled``, this proxy keeps
accepting connections and reading what clients send, but forwards nothing in either direction; when it
flows again, what was held is delivered, unless the client gave up and closed meanwhile.

Bounded: it listens on 127.0.0.1 only, holds at most ``max_connections`` client connections (more are
closed at once), and ``close()`` ends every connection and thread it started.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


class StallProxy:
    def __init__(self, upstream: tuple[str, int], *, max_connections: int = 128) -> None:
        self.upstream = upstream
        self.max_connections = max_connections
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.refused = 0  # over max_connections
        self.held = 0  # chunks that waited for a stall to end
        self.stalled_seconds = 0.0
        self._accept_thread = threading.Thread(target=self._accept_loop, name="stall-proxy", daemon=True)

    @classmethod
    def for_url(cls, url: str, **kw: int) -> StallProxy:
        """A proxy in front of ``http://host:port`` (the S3 endpoint); ``endpoint`` is its own URL."""
        hostport = url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        return cls((host, int(port)), **kw)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StallProxy:
        self._accept_thread.start()
        return self

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    @contextlib.contextmanager
    def hang(self) -> Iterator[None]:
        """Everything through the proxy hangs inside this block."""
        t0 = time.monotonic()
        self.stall()
        try:
            yield
        finally:
            self.flow()
            self.stalled_seconds += time.monotonic() - t0

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        if self._accept_thread.is_alive():
            self._accept_thread.join(5)
        self._listener.close()
        for t in list(self._threads):
            t.join(5)

    def __enter__(self) -> StallProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                full = len(self._conns) >= 2 * self.max_connections
            if full:
                self.refused += 1
                client.close()
                continue
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(client,), name="stall-proxy-conn", daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.settimeout(None)
        with self._lock:
            self._conns.update((client, upstream))
        back = threading.Thread(target=self._pump, args=(upstream, client), name="stall-proxy-back", daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.difference_update((client, upstream))
        client.close()
        upstream.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if not self._flowing.is_set():
                    self.held += 1
                    while not self._flowing.wait(0.2):
                        if self._closed.is_set():
                            return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One direction ended: end the other too, like a proxy that drops the pair.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
