"""Private services of the chaos run: a Redis that may lose every key, a webhook receiver."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

__all__ = ["RedisServer", "WebhookReceiver"]


class RedisServer:
    """A private ``redis-server`` without persistence: a restart loses every key."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = folder
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Kill the server (SIGKILL, as a crash): every key is gone, connections drop."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)  # an outage of this length, not synchronisation
        self.start()


class WebhookReceiver(ThreadingHTTPServer):
    """Answers every webhook POST with 204 and keeps its (webhook-id, event type)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def event_ids(self, kind: str) -> set[str]:
        return {event_id for event_id, t in list(self.received) if t == kind}


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        assert isinstance(self.server, WebhookReceiver)
        self.server.received.append((self.headers.get("webhook-id", ""), body.get("type", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

