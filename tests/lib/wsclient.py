"""A small WebSocket client (RFC 6455, ws:// and wss://) on the Python standard library.

    ws = wsclient.connect("ws://127.0.0.1:PORT/subscribe?cursor=0")
    text = ws.recv(timeout=5)   # a text frame as str, or None once the server closed
    ws.close()

recv() answers pings, reassembles fragmented messages, and raises TimeoutError when nothing
arrives in time. recv_bytes() returns a message's raw payload (for frames that are not valid
UTF-8), recv_message() its opcode too (1 text, 2 binary). ws.headers are the response's
headers (lower-case names). A refused upgrade raises HandshakeError with the status and body.
wss:// verifies the server against cafile. The connection is also a context manager.
"""
import base64
import hashlib
import os
import socket
import ssl
import struct
import urllib.parse

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    def __init__(self, message, status=None, body=b""):
        super().__init__(message)
        self.status, self.body = status, body


class WebSocket:
    def __init__(self, sock, leftover=b"", headers=None):
        self.sock = sock
        self.buf = bytearray(leftover)
        self.closed = False
        self.headers = headers or {}

    # ---- receiving ----
    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise TimeoutError("no WebSocket frame in time") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def _frame(self, timeout):
        """One frame: (fin, opcode, payload), or None at end of stream."""
        if not self._fill(2, timeout):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            if not self._fill(4, timeout):
                return None
            n, hl = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            if not self._fill(10, timeout):
                return None
            n, hl = struct.unpack(">Q", self.buf[2:10])[0], 10
        mask = None
        if b1 & 0x80:
            if not self._fill(hl + 4, timeout):
                return None
            mask, hl = self.buf[hl:hl + 4], hl + 4
        if not self._fill(hl + n, timeout):
            return None
        payload = bytes(self.buf[hl:hl + n])
        del self.buf[:hl + n]
        if mask:
            payload = bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_bytes(self, timeout=10.0):
        """The next text or binary message's payload, or None once the connection is closed."""
        m = self.recv_message(timeout)
        return None if m is None else m[1]

    def recv_message(self, timeout=10.0):
        """(opcode, payload) of the next text or binary message, or None once closed."""
        parts, first = [], None
        while not self.closed:
            f = self._frame(timeout)
            if f is None:
                self._shutdown()
                return None
            fin, opcode, payload = f
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                try:
                    self._send(0x8, payload[:2])
                except OSError:
                    pass
                self._shutdown()
                return None
            elif opcode in (0x0, 0x1, 0x2):
                first = first or opcode
                parts.append(payload)
                if fin:
                    return first, b"".join(parts)
        return None

    def recv(self, timeout=10.0):
        """The next message as text (invalid UTF-8 replaced), or None once closed."""
        data = self.recv_bytes(timeout)
        return None if data is None else data.decode("utf-8", errors="replace")

    # ---- sending ----
    def _send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        body = bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send_text(self, text):
        self._send(0x1, text.encode())

    def ping(self, payload=b""):
        self._send(0x9, payload)

    # ---- closing ----
    def _shutdown(self):
        if not self.closed:
            self.closed = True
            self.sock.close()

    def close(self, timeout=2.0):
        """Sends a close frame, waits briefly for the server's, and closes the socket."""
        if self.closed:
            return
        try:
            self._send(0x8, struct.pack(">H", 1000))
            while self._frame(timeout) not in (None,) and not self.closed:
                pass
        except (OSError, TimeoutError):
            pass
        self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(url, timeout=10.0, headers=None, cafile=None):
    """Opens a ws:// or wss:// URL; raises HandshakeError if the server does not switch
    protocols (with its status line and body)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("ws", "wss"):
        raise ValueError("only ws:// and wss:// URLs are supported: " + url)
    port = u.port or (443 if u.scheme == "wss" else 80)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    sock = socket.create_connection((u.hostname, port), timeout=timeout)
    if u.scheme == "wss":
        ctx = ssl.create_default_context(cafile=cafile)
        sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {u.hostname}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise HandshakeError("connection closed during the handshake: %r" % resp[:200])
        resp += chunk
    head, _, rest = resp.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    hdrs = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if " 101 " not in status + " ":
        body = rest
        try:
            while len(body) < int(hdrs.get("content-length", 0)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except OSError:
            pass
        sock.close()
        raise HandshakeError(status, int(status.split()[1]), body)
    expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
    if hdrs.get("sec-websocket-accept") != expected:
        sock.close()
        raise HandshakeError("bad Sec-WebSocket-Accept: %r" % hdrs.get("sec-websocket-accept"))
    return WebSocket(sock, rest, hdrs)
