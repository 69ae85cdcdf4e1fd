"""The test process's one huggingface_hub client, shared by every thread, and a refused connection.

huggingface_hub answers a refused connection (`ConnectError`) by closing its shared client, and with it
every connection other threads are reading from: their requests fail with `ReadError: [Errno 9] Bad file
descriptor`. In the suite, hfremote's background threads of an earlier test (its sweep of stale runs, a
look at a run) reach that test's stopped emulator, and the current test's own request failed so.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from huggingface_hub import get_session
from huggingface_hub.utils import http_backoff

_TRICKLE = 20


@pytest.fixture
def slow_server() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """A loopback server answering in two parts: the headers and "o", then a trickle of "k" once `go` is set."""
    sent, go = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(1 + _TRICKLE))
            self.end_headers()
            self.wfile.write(b"o")
            self.wfile.flush()
            sent.set()
            go.wait(30)
            for _ in range(_TRICKLE):  # a slow answer: the client reads on, many times
                self.wfile.write(b"k")
                self.wfile.flush()
                time.sleep(0.01)

        def log_message(self, *args: object) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sent, go
    finally:
        go.set()
        server.shutdown()
        server.server_close()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def test_a_refused_connection_elsewhere_does_not_cut_a_request_in_flight(
    slow_server: tuple[str, threading.Event, threading.Event],
) -> None:
    url, sent, go = slow_server
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(get_session().get(url).content)
        except Exception as e:
            outcome.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    assert sent.wait(30)  # the request is in flight, half read
    with pytest.raises(Exception, match="Connection refused"):  # what an earlier test's thread meets
        http_backoff("GET", f"http://127.0.0.1:{_refused_port()}/", max_retries=0)
    go.set()
    reader.join(30)
    assert outcome == [b"o" + b"k" * _TRICKLE]
