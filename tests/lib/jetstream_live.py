"""A Jetstream v1 stand-in whose events a test pushes while the appview is connected (the
replay server, tests/tools/jetstream_replay, serves a file fixed at start). RFC 6455 over ws://
on loopback, server side: each connection gets every event pushed so far whose time_us is at
least its `cursor` parameter (all when none), in order, then each new one as it is pushed.

    js = jetstream_live.Server()
    js.url                      # ws://127.0.0.1:PORT/subscribe
    js.push({"did": ..., "time_us": ..., "kind": "commit", "commit": {...}})
    js.close()
"""
import base64
import hashlib
import json
import socket
import struct
import threading
import urllib.parse

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(text):
    data = text.encode()
    n = len(data)
    if n < 126:
        head = struct.pack(">BB", 0x81, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x81, 126, n)
    else:
        head = struct.pack(">BBQ", 0x81, 127, n)
    return head + data


class Server:
    def __init__(self):
        self.events, self.cond, self.closed = [], threading.Condition(), False
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"ws://127.0.0.1:{self.sock.getsockname()[1]}/subscribe"
        threading.Thread(target=self._accept, daemon=True).start()

    def push(self, event):
        self.push_many([event])

    def push_many(self, events):
        """Pushes events at once: each connection gets their frames in one write."""
        with self.cond:
            self.events.extend(events)
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                req += chunk
            lines = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, v in
                       (line.split(":", 1) for line in lines[1:] if ":" in line)}
            accept = base64.b64encode(hashlib.sha1(
                (headers["sec-websocket-key"] + _GUID).encode()).digest()).decode()
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
            cursor = int(q["cursor"][0]) if "cursor" in q else None
            with self.cond:
                self.connections += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()
            sent = 0
            while True:
                with self.cond:
                    while sent == len(self.events) and not self.closed:
                        self.cond.wait(0.5)
                    if self.closed:
                        return
                    todo = self.events[sent:]
                    sent = len(self.events)
                conn.sendall(b"".join(_frame(json.dumps(ev)) for ev in todo
                                      if cursor is None or ev["time_us"] >= cursor))
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _drain(conn):
        """Reads and drops what the client sends (pongs, its close frame)."""
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
