"""The HTTP server around the app: uvicorn, plus an honest exit code and a graceful drain on SIGTERM.

* **Model load failure → exit 1.** The model loads in the background after startup (``/health`` answers at
  once); if loading fails, the server stops and ``python -m pokedex.serve`` exits non-zero after logging why,
  so Docker, Cloud Run or Kubernetes restart it (or report a crash loop) instead of keeping a process up
  that can never answer a prediction.
* **SIGTERM → drain, then exit 0.** Plain uvicorn stops accepting connections at once and re-raises the signal
  after its shutdown (the process then dies *by* SIGTERM, status -15). Here the first SIGTERM (or Ctrl-C)
  starts a drain: ``/ready`` turns 503 (load balancers stop sending), new prediction requests get 503 with
  ``Retry-After`` (``pokedex.serve.admission``), and the requests already admitted finish. When none is left,
  or after ``shutdown_grace_s``, uvicorn's own graceful shutdown runs (with the same grace for open
  connections) and the process exits 0. A second signal skips the wait.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from pokedex.serve.app import create_app
from pokedex.serve.service import Service
from pokedex.serve.settings import ServeSettings

log = logging.getLogger("pokedex.serve")


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that drains on the first SIGTERM/SIGINT and stops when the model fails to load."""

    def __init__(self, config: uvicorn.Config, service: Service, grace_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.grace_s = grace_s
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None:  # first signal: drain (the signal is not re-raised: exit status 0)
            self.drain_deadline = time.monotonic() + self.grace_s
            self.service.begin_drain()
            log.info("signal %d: draining %d request(s) in flight (grace %.0f s)", sig, self.service.inflight,
                     self.grace_s)  # fmt: skip
        elif not self.should_exit:
            self.should_exit = True  # second signal: stop waiting for the drain
        else:
            self.force_exit = True  # third: uvicorn stops waiting for connections too

    async def on_tick(self, counter: int) -> bool:
        """Called by uvicorn every 0.1 s; decides when the drain is over or the model load has failed."""
        if not self.should_exit and self.service.load_error is not None:
            log.error("stopping: %s", self.service.load_error)
            self.should_exit = True
        deadline = self.drain_deadline
        if (
            not self.should_exit
            and deadline is not None
            and (self.service.inflight == 0 or time.monotonic() >= deadline)
        ):
            log.info("drained (%d request(s) still in flight): shutting down", self.service.inflight)
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: ServeSettings) -> int:
    """Run the service until it is stopped; the process exit status (1 when the model failed to load)."""
    app = create_app(settings)
    service: Service = app.state.service
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_keep_alive=settings.timeout_keep_alive,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    DrainingServer(config, service, settings.shutdown_grace_s).run()
    if service.load_error is not None:
        log.error("exiting with status 1: %s", service.load_error)
        return 1
    return 0
