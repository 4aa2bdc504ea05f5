"""io.prefetch: items read ahead in a thread, errors handed over, the source closed on an early stop."""

import threading

import pytest

from recap_data.io import prefetch


def test_items_in_order_and_errors_in_the_consumer():
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("damaged")

    got = []
    with pytest.raises(ValueError, match="damaged"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_an_early_stop_closes_the_source_in_its_thread():
    closed, threads = threading.Event(), []

    def source():
        try:
            yield from range(1000)
        finally:  # where a decoder's processes are killed
            threads.append(threading.current_thread())
            closed.set()

    stream = prefetch(source(), depth=1)
    assert next(stream) == 0
    stream.close()  # the consumer stops: the generator's finally runs before close returns
    assert closed.is_set() and threads[0] is not threading.current_thread()
