"""Run one action from several clients at once: the concurrency tests' common harness."""

from __future__ import annotations

import threading


def race(stores: list, action) -> list:
    """`action(store)` in one thread per store, released together; each outcome or its exception."""
    n = len(stores)
    barrier = threading.Barrier(n)
    outcomes: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = action(stores[i])
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
