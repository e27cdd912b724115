"""The verify thread's backlog: items alone while it keeps up, in one batch once it falls behind."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from modelexpress.p2p.pull.backlog import Backlog


def test_items_added_while_the_worker_is_busy_are_taken_in_one_batch_in_order() -> None:
    batches: list[list[int]] = []
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        backlog = Backlog(pool, batches.append)
        pool.submit(release.wait, 10)  # the worker is busy with an earlier job
        for item in range(50):
            backlog.add(item)
        release.set()
    assert batches == [list(range(50))]


def test_an_item_added_while_the_worker_keeps_up_is_processed_alone_and_nothing_twice() -> None:
    batches: list[list[int]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        backlog = Backlog(pool, batches.append)
        for item in range(20):
            backlog.add(item)
            pool.submit(lambda: None).result()  # wait until the worker is idle again
    assert batches == [[item] for item in range(20)]


def test_items_added_from_several_threads_are_each_processed_exactly_once() -> None:
    seen: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        backlog = Backlog(pool, seen.extend)
        adders = [
            threading.Thread(target=lambda base=base: [backlog.add(base + i) for i in range(500)])
            for base in range(0, 4000, 1000)
        ]
        for adder in adders:
            adder.start()
        for adder in adders:
            adder.join()
    assert sorted(seen) == [base + i for base in range(0, 4000, 1000) for i in range(500)]
