"""The abuse cases' client: it says when its request is written whole, and reads every answer
(a 503's Retry-After included); no answer at all is a status of None. Their heaviest request
stays within the limits, and only a 200 or a 503 saying when to retry is an answer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nextbuy import procs
from nextbuy.bench.faults import serving


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
        reply = serving.post(f"http://{procs.HOST}:{server.server_port}", b"{}", 10, sent.set)
    finally:
        server.shutdown()
        server.server_close()
    assert sent.is_set()
    assert (reply.status, reply.retry_after, reply.message) == (503, "2", "busy")


def test_a_refused_connection_is_no_answer_and_never_sent():
    sent = threading.Event()
    reply = serving.post(f"http://{procs.HOST}:{procs.free_port()}", b"{}", 5, sent.set)
    assert reply.status is None
    assert "ConnectionRefusedError" in reply.message
    assert not sent.is_set()
    assert serving.bad_replies([reply]) == [reply]


def test_the_heaviest_top_k_request_stays_within_the_limits_it_tests():
    from nextbuy.serving import MAX_REQUEST_ROWS, MAX_TOP_K

    for n_products in (2, 300, 5000):
        body = json.loads(serving.heavy_topk_body(n_products))
        k, sources = body["params"]["top_k"], len(body["dataframe_split"]["data"])
        assert k <= MAX_TOP_K
        assert k < n_products
        assert sources * k <= MAX_REQUEST_ROWS < (sources + 1) * k or sources == n_products


def test_under_abuse_only_a_200_or_a_503_saying_when_to_retry_is_an_answer():
    reply = serving.Reply
    good = [reply(200, None, 1.0, ""), reply(503, "1", 0.1, "server busy")]
    bad = [reply(503, None, 0.1, ""), reply(504, None, 60.0, ""), reply(None, None, 9.0, "reset")]
    assert serving.bad_replies(good + bad) == bad
