"""An asyncio event loop in a background thread, so synchronous code (pytest, a CLI) can drive the bench."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Start with start() (or `with`), run coroutines with run(), end with stop(): remaining tasks are
    cancelled and the thread joined."""

    def __init__(self, name: str = "bench-loop") -> None:
        self._name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopThread:
        """Start the loop's thread."""
        ready = threading.Event()

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        """Run a coroutine on the loop and return its result (its exception is raised here)."""
        if self.loop is None:
            coroutine.close()
            raise RuntimeError("the loop thread is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what still runs, stop the loop and join its thread."""
        if self.loop is None or self._thread is None:
            return
        self.run(_cancel_all(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        self.loop = None
        self._thread = None

    def __enter__(self) -> LoopThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
