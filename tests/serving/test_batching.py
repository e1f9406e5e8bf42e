"""Server-side batching: concurrent requests merge up to max_batch_size, answers split back per
request, a bad request fails alone, limits answer as TF Serving does, close drains the queue."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from serving.api.status import ServingStatus
from serving.backends.batching import Batcher, BatchingOptions

pytestmark = pytest.mark.unit


def double(inputs):
    """A stand-in model: rows with a negative value are 'undecodable' and fail the whole call."""
    x = inputs["x"]
    if (x < 0).any():
        raise ServingStatus.invalid("negative input")
    return {"y": x * 2, "n": np.full(len(x), len(x))}


class Gated:
    """`double` whose calls wait until the test opens the gate, and which says when the first began:
    requests submitted meanwhile are queued, whatever the machine's speed."""

    def __init__(self) -> None:
        self.gate, self.first_call = threading.Event(), threading.Event()

    def __call__(self, inputs):
        self.first_call.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return double(inputs)


def opts(**kw):
    base = {"max_batch_size": 8, "batch_timeout_micros": 20_000, "num_batch_threads": 1, "max_enqueued_batches": 4}
    return BatchingOptions(**{**base, **kw})


def submit_all(batcher, requests):
    futures = [None] * len(requests)

    def go(i):
        futures[i] = batcher.submit({"x": requests[i]})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return futures


def test_concurrent_requests_are_merged_and_split_back():
    """The first request occupies the one batch thread (its call waits at a gate) while eleven more
    queue in a known order; once the gate opens they run merged, greedily up to 8 rows a batch."""
    model = Gated()
    b = Batcher(model, opts())
    requests = [np.full((1 + i % 3, 2), float(i)) for i in range(12)]  # 1, 2, 3, 1, 2, 3, ... rows
    futures = [b.submit({"x": requests[0]})]
    assert model.first_call.wait(30)
    futures += [b.submit({"x": r}) for r in requests[1:]]
    model.gate.set()
    for req, fut in zip(requests, futures, strict=True):
        out = fut.result(10)
        np.testing.assert_array_equal(out["y"], req * 2)
    b.close()
    # 1 alone; then 2+3+1+2 = 8; 3+1+2 = 6 (a 3 would make 9); 3+1+2 = 6; the last 3.
    assert list(b.batch_sizes) == [1, 8, 6, 6, 3]


def test_a_bad_request_fails_alone():
    b = Batcher(double, opts(batch_timeout_micros=50_000))
    requests = [np.ones((1, 2)), -np.ones((1, 2)), np.full((2, 2), 3.0)]
    futures = submit_all(b, requests)
    np.testing.assert_array_equal(futures[0].result(10)["y"], requests[0] * 2)
    np.testing.assert_array_equal(futures[2].result(10)["y"], requests[2] * 2)
    with pytest.raises(ServingStatus, match="negative input"):
        futures[1].result(10)
    b.close()


def test_task_larger_than_max_batch_size_is_refused():
    b = Batcher(double, opts())
    with pytest.raises(ServingStatus) as info:
        b.submit({"x": np.ones((9, 2))})
    assert (info.value.code, info.value.message) == (
        "INVALID_ARGUMENT", "Task size 9 is larger than maximum input batch size 8")
    b.close()


def test_full_queue_answers_unavailable():
    model = Gated()
    b = Batcher(model, opts(max_enqueued_batches=1, batch_timeout_micros=0))
    first = b.submit({"x": np.ones((8, 1))})  # taken by the only batch thread, which blocks
    assert model.first_call.wait(30)
    queued = b.submit({"x": np.ones((8, 1))})  # fills the one queued batch
    with pytest.raises(ServingStatus) as info:
        b.submit({"x": np.ones((1, 1))})
    assert info.value.code == "UNAVAILABLE" and "queue" in info.value.message
    model.gate.set()
    assert first.result(10)["y"].shape == (8, 1) and queued.result(10)["y"].shape == (8, 1)
    b.close()


def test_unequal_batch_dims_are_invalid():
    b = Batcher(double, opts())
    with pytest.raises(ServingStatus, match="equal 0th-dimension size"):
        b.submit({"x": np.ones((2, 1)), "z": np.ones((3, 1))})
    b.close()


def test_close_finishes_queued_requests_then_refuses():
    b = Batcher(double, opts(batch_timeout_micros=200_000))
    fut = b.submit({"x": np.ones((1, 1))})
    b.close()  # the request waits for company for 0.2 s; closing runs it at once
    assert fut.result(1)["y"].tolist() == [[2.0]]
    with pytest.raises(ServingStatus, match="shutting down"):
        b.submit({"x": np.ones((1, 1))})


def test_batching_off_runs_each_request_alone():
    b = Batcher(double, BatchingOptions(enabled=False))
    futures = submit_all(b, [np.ones((1, 1))] * 4)
    assert [f.result(10)["n"].tolist() for f in futures] == [[1]] * 4
    assert list(b.batch_sizes) == [1, 1, 1, 1] and b.rows_run == 4


def test_local_server_runs_at_most_one_batch_per_two_cores():
    """Each run uses every core, so side-by-side batches only split them: the bundle's
    num_batch_threads (sized for a TF Serving pod) is capped on a smaller machine."""
    from serving.frontends.server import local_batch_threads
    assert local_batch_threads(4, cpus=2) == 1
    assert local_batch_threads(4, cpus=1) == 1
    assert local_batch_threads(4, cpus=6) == 3
    assert local_batch_threads(4, cpus=64) == 4  # never more than the config asks for
