"""One asyncio event loop in a background thread, shared by every embedded server of a lab.

Servers are thin asyncio shells; this thread runs them all, so a lab is one thread however
many hosts it plays, and starting it is a matter of milliseconds.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable

from ..errors import StartError


class LoopThread:
    def __init__(self, name: str = "labkit-loop"):
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                try:
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    for t in pending:
                        t.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise StartError("the lab's event loop did not start within 5 s")

    def run(self, coro: Awaitable[Any], timeout: float | None = 30) -> Any:
        """Run ``coro`` on the loop from another thread and return its result."""
        if not self.running or self.loop is None:
            raise StartError("the lab's event loop is not running; call start() first")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def stop(self, timeout: float = 10) -> None:
        if self._thread is None:
            return
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self._thread = None
        self.loop = None
