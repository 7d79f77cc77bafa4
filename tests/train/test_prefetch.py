import threading
import time

import pytest

from yolojax.train.feed import Prefetch


def test_items_in_order_then_exhausted():
    with Prefetch(iter(range(20)), depth=3) as items:
        assert list(items) == list(range(20))
        with pytest.raises(StopIteration):
            next(items)


def test_producer_error_reaches_the_consumer():
    def items():
        yield 1
        raise ValueError("bad record")

    with Prefetch(items()) as it:
        assert next(it) == 1
        with pytest.raises(ValueError, match="bad record"):
            next(it)


def test_close_early_stops_the_thread_and_production():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    before = threading.active_count()
    prefetch = Prefetch(items(), depth=2)
    assert next(prefetch) == 0
    time.sleep(0.05)
    prefetch.close()
    assert threading.active_count() == before
    assert len(produced) <= 5  # at most depth ahead (+ the items in hand), not the whole iterable


def test_prepare_on_several_threads_keeps_the_order():
    def slow_square(x):
        time.sleep(0.001 * (x % 3))
        return x * x

    with Prefetch(range(30), depth=4, prepare=slow_square, threads=3) as items:
        assert list(items) == [x * x for x in range(30)]


def test_prepare_error_reaches_the_consumer():
    def fail_on_two(x):
        if x == 2:
            raise RuntimeError("copy failed")
        return x

    with Prefetch(range(5), prepare=fail_on_two, threads=2) as items:
        assert [next(items), next(items)] == [0, 1]
        with pytest.raises(RuntimeError, match="copy failed"):
            next(items)
