"""A local HTTP server standing in for an upstream (a PDS, a PLC directory, a did:web host) in
the integration tests: handler(hd, path) answers each GET, and hits are counted per path."""
import http.server
import socketserver
import threading


class Server:
    def __init__(self, handler):
        self.hits = {}
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                try:
                    handler(self, self.path)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class T(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.httpd = T(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
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


def reply(hd, status, body):
    """A complete JSON answer (body: str or bytes)."""
    body = body.encode() if isinstance(body, str) else body
    hd.send_response(status)
    hd.send_header("Content-Type", "application/json")
    hd.send_header("Content-Length", str(len(body)))
    hd.end_headers()
    hd.wfile.write(body)
