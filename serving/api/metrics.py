"""The local server's Prometheus page, written by prometheus_client (which escapes label values).

TF Serving's metric names are kept: `:tensorflow:serving:request_count` (by model, API and
status), `:tensorflow:serving:request_latency_seconds` (a summary by API) and
`:tensorflow:serving:batching_session:processed_batch_size` (a summary per batcher). The request
count is declared `untyped`, not `counter`: prometheus_client's text format renames every counter
to `<name>_total`, and a dashboard written for TF Serving queries the name without it.

Label values are bounded: a request naming a model the server does not serve is counted under
model_name UNKNOWN_MODEL, so a client sending made-up names cannot grow the page or the memory.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric, SummaryMetricFamily

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency_seconds"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
#: The model_name of every request for a model this server does not serve.
UNKNOWN_MODEL = "(unknown)"
#: (model, version, signature, rows run, batches run) of each batcher, read at scrape time.
BatchStats = Callable[[], Iterable[tuple[str, int, str, int, int]]]


class ServerMetrics:
    """Request counts and latencies, recorded by both front ends and collected on each scrape."""

    def __init__(self, models: Container[str], batch_stats: BatchStats = lambda: ()) -> None:
        self._models = models
        self._batch_stats = batch_stats
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, tuple[float, int]] = defaultdict(lambda: (0.0, 0))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a private registry: two servers in one process never mix

    def record(self, model: str, api: str, code: str, seconds: float) -> None:
        """Count one answered request; a model name that is not served counts as UNKNOWN_MODEL."""
        name = model if model in self._models else UNKNOWN_MODEL
        with self._lock:
            self._counts[(name, api, code)] += 1
            total, count = self._latency[api]
            self._latency[api] = (total + seconds, count + 1)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted(self._latency.items())
        requests = Metric(REQUEST_COUNT, "Requests answered, by model, API and status "
                                         "(TF Serving's counter; untyped to keep its name).", "unknown")
        for (model, api, code), n in counts:
            requests.add_sample(REQUEST_COUNT, {"model_name": model, "api": api, "status": code}, n)
        yield requests
        seconds = SummaryMetricFamily(REQUEST_LATENCY, "Seconds spent answering requests, by API.", labels=["api"])
        for api, (total, count) in latency:
            seconds.add_metric([api], count_value=count, sum_value=total)
        yield seconds
        batches = SummaryMetricFamily(BATCH_SIZE, "Rows per batch run by each batcher.",
                                      labels=["model_name", "version", "signature"])
        for model, version, signature, rows, runs in sorted(self._batch_stats()):
            batches.add_metric([model, str(version), signature], count_value=runs, sum_value=rows)
        yield batches

    def text(self) -> str:
        """The page in Prometheus' text format (0.0.4)."""
        return generate_latest(self.registry).decode()
