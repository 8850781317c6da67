"""A client of the abuse cases: it says when its request is written whole, and reads every
answer (a 503's Retry-After included); no answer at all is a status of None."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nextbuy import procs
from nextbuy.bench import fault_serving


class Busy(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503)
        self.send_header("Retry-After", "2")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"busy")

    def log_message(self, *args) -> None:
        pass


def test_a_request_is_counted_as_sent_then_its_503_and_retry_after_are_read():
    server = ThreadingHTTPServer((procs.HOST, 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sent = threading.Event()
    try:
        reply = fault_serving.post(f"http://{procs.HOST}:{server.server_port}", b"{}", 10, sent.set)
    finally:
        server.shutdown()
        server.server_close()
    assert sent.is_set()
    assert (reply.status, reply.retry_after, reply.message) == (503, "2", "busy")


def test_a_refused_connection_is_no_answer_and_never_sent():
    sent = threading.Event()
    reply = fault_serving.post(f"http://{procs.HOST}:{procs.free_port()}", b"{}", 5, sent.set)
    assert reply.status is None
    assert "ConnectionRefusedError" in reply.message
    assert not sent.is_set()
    assert fault_serving.bad_replies([reply]) == [reply]
