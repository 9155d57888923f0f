"""A socket server that plays back exact bytes, one script per accepted connection, for the HTTP client's tests.

Each script is a function of a `Peer` (the accepted connection): it reads requests and writes whatever bytes it
likes, split as it likes. The server records every accept and every request it read, so that a test can assert
what went over the wire (one accept for two keep-alive requests, a POST sent exactly once). Scripts that wait on
the test use bounded waits; an exception in a script fails the test when the server stops.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WAIT_S = 5.0  # bound on every wait in a script: a wait that times out fails the test instead of hanging it


@dataclass
class Request:
    connection: int  # the index of the connection it came on (0 = the first accepted)
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Peer:
    """One accepted connection, as its script sees it."""

    def __init__(self, sock: socket.socket, index: int, server: ScriptedServer) -> None:
        self.sock = sock
        self.index = index
        self._server = server
        self._buf = b""
        self.closed_by_client = False  # seen while sending
        with contextlib.suppress(OSError):  # a client that has already reset the connection: reads will say so
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(WAIT_S)

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:  # the client closed with bytes of ours unread (it stopped reading early)
            data = b""
        self._buf += data
        return bool(data)

    def read_request(self) -> Request | None:
        """The next request on this connection (head and Content-Length body), or None if the client closed it."""
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                if self._buf:
                    raise AssertionError(f"connection {self.index}: closed mid-request: {self._buf[:200]!r}")
                return None
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _version = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self._buf) < n:
            if not self._fill():
                raise AssertionError(f"connection {self.index}: closed mid-body")
        body, self._buf = self._buf[:n], self._buf[n:]
        request = Request(self.index, method, path, headers, body)
        with self._server.lock:
            self._server.requests.append(request)
        return request

    def expect_request(self) -> Request:
        request = self.read_request()
        assert request is not None, f"connection {self.index}: closed by the client before a request"
        return request

    def send(self, *parts: bytes) -> None:
        """Write each part with its own send (TCP_NODELAY: each leaves as its own segment). A client that has
        closed the connection (it may stop reading at an error event) ends the sending, without an error: the
        test asserts what the client made of what it read."""
        for part in parts:
            try:
                self.sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                self.closed_by_client = True
                return

    def wait_closed_by_client(self) -> None:
        """Block until the client closes its end (bounded); fail if it sends anything meanwhile."""
        extra = b""
        while self._fill():
            extra, self._buf = extra + self._buf, b""
        assert not extra, f"connection {self.index}: unexpected bytes before close: {extra[:200]!r}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


Script = Callable[[Peer], None]


class ScriptedServer:
    """`with ScriptedServer(script0, script1, ...) as server:` serves connection i with script i on 127.0.0.1."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._peers: list[Peer] = []
        self._threads: list[threading.Thread] = []
        self._wake_addr: tuple[str, int] | None = None
        self._stopping = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedServer:
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Accept what the client has already connected (the backlog is served in order, before the wake-up
        # connection), then let every script run to its end: a script ends when the client closes its connection,
        # so whatever the client sent before that is recorded, with no race against the test's own assertions.
        with socket.socket() as wake:  # wakes the accept loop, which stops at this connection
            wake.bind(("127.0.0.1", 0))
            self._wake_addr = wake.getsockname()
            wake.settimeout(WAIT_S)
            wake.connect(("127.0.0.1", self.port))
        self._accept_thread.join(WAIT_S)
        self._listener.close()
        if exc_type is None:
            for thread in self._threads:
                thread.join(WAIT_S)
            if any(thread.is_alive() for thread in self._threads):
                self.errors.append(AssertionError(f"a script still ran {WAIT_S:g} s after the test"))
        self._stopping = True  # from here on, scripts are cut short: their errors are not the test's
        for peer in list(self._peers):  # unblocks scripts still reading
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(WAIT_S)
        for peer in self._peers:
            peer.close()
        if exc_type is None and self.errors:
            raise AssertionError(f"a server script failed: {self.errors[0]!r}") from self.errors[0]

    def paths(self) -> list[tuple[int, str, str]]:
        """(connection, method, path) of every request read, in order."""
        with self.lock:
            return [(r.connection, r.method, r.path) for r in self.requests]

    def _accept_loop(self) -> None:
        while True:
            sock, addr = self._listener.accept()
            if addr == self._wake_addr:
                sock.close()
                return
            with self.lock:
                index = self.accepted
                self.accepted += 1
            peer = Peer(sock, index, self)
            self._peers.append(peer)
            if index >= len(self.scripts):
                self.errors.append(AssertionError(f"unexpected connection #{index}"))
                peer.close()
                continue
            thread = threading.Thread(target=self._run, args=(self.scripts[index], peer), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Script, peer: Peer) -> None:
        try:
            script(peer)
        except Exception as exc:  # noqa: BLE001 - any failure of a script is reported when the server stops
            if not self._stopping:
                self.errors.append(exc)
        finally:
            if not self._stopping:
                peer.close()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body, framed."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunked(*chunks: bytes) -> bytes:
    """A whole chunked body: each chunk framed, then the terminating 0 chunk."""
    return b"".join(map(chunk, chunks)) + b"0\r\n\r\n"


def head(status: str = "200 OK", **headers: str) -> bytes:
    """A response head; header names are given with underscores (content_length=...)."""
    lines = [f"HTTP/1.1 {status}", *(f"{k.replace('_', '-').title()}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sse(event: Any) -> bytes:
    """One server-sent event carrying JSON (or a raw string such as [DONE])."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data:{data}\n\n".encode()
