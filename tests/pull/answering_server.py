"""A loopback HTTP server that answers from a script: the failures a real Prometheus
cannot be made to produce on demand (5xx, garbage, slowness), and a record of the
requests (headers included) to check what the reader sends."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.app.live import HOST

MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [{"metric": {"host": "a"}, "values": [[100, "1.5"], [101, "NaN"]]}],
    },
}


@dataclass
class Answer:
    status: int = 200
    body: bytes = json.dumps(MATRIX).encode()
    delay: float = 0.0  # seconds before answering


@dataclass
class Script:
    answers: list[Answer]  # in order; the last one repeats
    requests: list[dict] = field(default_factory=list)  # headers of each request

    def next_answer(self) -> Answer:
        index = min(len(self.requests), len(self.answers)) - 1
        return self.answers[index]


@contextlib.contextmanager
def answering_server(*answers: Answer) -> Iterator[tuple[str, Script]]:
    script = Script(list(answers))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            script.requests.append(dict(self.headers))
            answer = script.next_answer()
            time.sleep(answer.delay)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
