"""Serving the control plane: in the foreground (`carina up`) or in a thread (`carina run`).

Both claim the state folder first (one folder, one server: local.state_lock) and bind their
socket before the app starts: a server that cannot listen exits before its substrate has
adopted, and so before it could stop, any worker.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from carina.platform.controlplane.main import create_app
from carina.platform.controlplane.settings import Settings
from carina.platform.embedded.state_lock import StateLock

# Clients poll (`carina run` twice a second); uvicorn's default of 5 s closes their idle
# connections often enough for a reused one to meet a close mid-request.
KEEP_ALIVE_SECONDS = 75


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port); OSError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// URL a bound socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings, sock: socket.socket) -> None:
    """Run on a bound socket until SIGINT/SIGTERM; shutdown stops workers after their save."""
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    uvicorn.Server(config).run(sockets=[sock])


class EmbeddedServer:
    """The control plane and local substrate in a background thread of this process.

    Constructing it claims the state folder (StateInUse when another server holds it).
    """

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = StateLock(settings.resolved_state_dir())
        try:
            self._socket = listen(host, port)
        except OSError:
            self._lock.release()
            raise
        self.port = int(self._socket.getsockname()[1])
        self.url = url_of(self._socket)
        self._lock.record(self.url)
        config = uvicorn.Config(
            create_app(settings),
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name="carina-embedded",
            daemon=True,
        )

    def __enter__(self) -> EmbeddedServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded control plane did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Shut down (stops running workers, which save a checkpoint first); frees the folder."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=120)
        self._socket.close()
        self._lock.release()
