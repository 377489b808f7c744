"""Serving the control plane: in the foreground (`carina up`) or in a thread (`carina run`)."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from carina.platform.local.launcher import free_ports
from carina.platform.server.main import create_app
from carina.platform.server.settings import Settings

# Clients poll (`carina run` twice a second); uvicorn's default of 5 s closes their idle
# connections often enough for a reused one to meet a close mid-request.
KEEP_ALIVE_SECONDS = 75


def serve(settings: Settings, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM; shutdown stops workers after their checkpoint save."""
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    uvicorn.Server(config).run()


class EmbeddedServer:
    """The control plane and local substrate in a background thread of this process."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.port = port or free_ports(1)[0]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve()), name="carina-embedded", daemon=True
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
        """Shut down (stops running workers, which save a checkpoint first)."""
        self._server.should_exit = True
        self._thread.join(timeout=120)
