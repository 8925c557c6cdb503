"""Running one function over many items with a bounded number in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(fn: Callable[[T], R], items: Iterable[T], *, workers: int, name: str = "worker",
                 stop_on_error: bool = True) -> list[R]:
    """``fn`` over ``items``, at most ``workers`` at a time; results in item order.

    After a failure, items not started yet are skipped (``stop_on_error``:
    for work that must stop at the first error, like writes) or still run
    (for cleanup that must be tried everywhere, like releasing locks). Either
    way every started call finishes first, then the earliest failure is raised.
    """
    items = list(items)
    failures: list[tuple[float, BaseException]] = []
    guard = threading.Lock()

    def call(item: T) -> R:
        try:
            return fn(item)
        except BaseException as exc:
            with guard:
                failures.append((time.monotonic(), exc))
            raise

    if len(items) <= 1 or workers <= 1:
        results = []
        for item in items:
            try:
                results.append(call(item))
            except Exception:  # noqa: BLE001 - raised below
                if stop_on_error:
                    break
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix=name) as pool:
            futures = [pool.submit(call, item) for item in items]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION if stop_on_error else ALL_COMPLETED)
            for future in pending:
                future.cancel()  # not started yet: skipped; running ones finish
        results = [] if failures else [future.result() for future in futures]
    if failures:
        raise min(failures, key=lambda failure: failure[0])[1]
    return results
