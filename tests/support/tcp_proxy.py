"""A loopback TCP proxy the test controls: `partition()` stops forwarding without closing or
refusing anything (connections hang, as behind a network partition; new ones are accepted
and hang too), `heal()` forwards what was held and goes on. `cut_after(marker, then)`: the
next connection to send `marker` (a statement's text, sent when it is prepared) is cut
right after it sends `then` (a value bound to it), before any answer: a commit whose
answer is lost."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.procs import LOCALHOST


class TcpProxy:
    def __init__(self, upstream_port: int):
        self.upstream = (LOCALHOST, upstream_port)
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._marker: tuple[bytes, bytes] | None = None
        self._marked: socket.socket | None = None  # the client connection that sent it
        self.cut = threading.Event()

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def partition(self) -> None:
        self._open.clear()

    def cut_after(self, marker: bytes, then: bytes) -> None:
        self._marker = (marker, then)

    def heal(self) -> None:
        self._open.set()

    def stop(self) -> None:
        self._closed = True
        self._open.set()  # the pumps' held data goes nowhere: their sockets close next
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst, src is client),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool = False) -> None:
        try:
            while data := src.recv(65536):
                self._open.wait()  # read, then held: the peer's writes succeed, nothing arrives
                if self._closed:
                    break
                dst.sendall(data)
                if upstream and self._marker is not None:
                    if self._marker[0] in data:
                        self._marked = src
                    if self._marked is src and self._marker[1] in data:  # no answer comes
                        self._marker = self._marked = None
                        self.cut.set()
                        break
        except OSError:
            pass
        finally:
            for sock in (src, dst):  # shut down first: a close alone leaves the other
                with contextlib.suppress(OSError):  # pump's recv, and so the connection, open
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
