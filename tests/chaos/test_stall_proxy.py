"""The S3 brown-out proxy: passes bytes through, holds them (both ways) while stalled, then delivers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.stall_proxy import StallProxy


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield ("127.0.0.1", int(server.getsockname()[1]))
    stop.set()
    t.join(5)
    server.close()


def test_bytes_flow_then_hang_then_flow_again(echo: tuple[str, int]) -> None:
    with StallProxy(echo) as proxy, socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c:
        c.sendall(b"one")
        assert c.recv(16) == b"one"
        with proxy.hang():
            c.sendall(b"two")
            c.settimeout(0.5)
            with pytest.raises(TimeoutError):  # accepted, read, and nothing comes back: a hang
                c.recv(16)
            # A new connection is accepted too, and hangs the same way.
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c2:
                c2.sendall(b"three")
                c2.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    c2.recv(16)
        c.settimeout(5)
        assert c.recv(16) == b"two"  # held, then delivered
        assert proxy.held >= 1 and proxy.stalled_seconds >= 0.5


def test_it_listens_on_loopback_only_and_closes_its_connections(echo: tuple[str, int]) -> None:
    proxy = StallProxy(echo).start()
    assert proxy.endpoint.startswith("http://127.0.0.1:")
    c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    c.sendall(b"x")
    assert c.recv(4) == b"x"
    proxy.stall()
    proxy.close()
    c.settimeout(5)
    assert c.recv(4) == b""  # closed, not left hanging
    c.close()
