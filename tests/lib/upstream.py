"""A local HTTP server standing in for an upstream (a PDS, a PLC directory, a did:web host, any
HTTP peer) in the integration tests: handler(hd, path) answers each GET or POST; requests are
counted per path, and the most ever in progress at once is kept (max_active)."""
import http.server
import socketserver
import threading


class Server:
    def __init__(self, handler):
        self.hits = {}
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away: nothing to answer

            def do_GET(self):
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                try:
                    handler(self, self.path)
                finally:
                    with outer.lock:
                        outer.active -= 1

            do_POST = do_GET

        class T(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.httpd = T(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, prefix):
        """Requests so far whose path starts with prefix."""
        with self.lock:
            return sum(n for p, n in self.hits.items() if p.startswith(prefix))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def reply(hd, status, body=b"", headers=None, ctype="application/json"):
    """A complete answer (body: str or bytes), JSON unless ctype says otherwise."""
    body = body.encode() if isinstance(body, str) else body
    hd.send_response(status)
    hd.send_header("Content-Type", ctype)
    hd.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        hd.send_header(k, v)
    hd.end_headers()
    hd.wfile.write(body)
