"""A Celery worker in a thread of this process: what `cloudsched demo` uses on the embedded Redis.

The same tasks as a `celery worker` process, consuming from the same broker; only the
process boundary differs (no signal handlers: it lives in a thread).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from celery.result import _set_task_join_will_block
from celery.worker import WorkController


@contextmanager
def worker_thread(app: Celery, concurrency: int = 2) -> Iterator[WorkController]:
    worker = WorkController(app=app, hostname="inprocess@cloudsched", pool="threads", concurrency=concurrency,
                            loglevel="WARNING", without_heartbeat=True, without_mingle=True, without_gossip=True)
    thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(in_sighandler=False)
        thread.join(15)
        # The worker marked this process as one where `result.get()` would block a pool; it no longer
        # is (celery.contrib.testing.worker resets the same flag when its thread worker starts).
        _set_task_join_will_block(False)
