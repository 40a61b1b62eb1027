"""Session processes' Prometheus counts, through prometheus-client's multiprocess mode.

A session process (web/session_process.py) counts its provider errors and fallbacks with
ordinary prometheus-client counters; because the spawner starts it with
PROMETHEUS_MULTIPROC_DIR in its environment (so it is there before prometheus_client is
imported), their values live in files in that directory, one per process. The directory is
this server's own: a fresh temporary directory per app, removed when the app stops.

The server's `/metrics` reads those files with `MultiProcessCollector` and adds them to the
server's own counters of the same names (its in-process sessions count in memory), so each
counter is one family whoever counted it. When a session process exits, its counts are
folded into the server's memory and its files deleted: the directory holds the live
processes' files only, however many sessions the server has run. The server itself stays
in ordinary in-memory mode: several apps may share a process (the tests do), and its
live-sessions gauge is a callback, which multiprocess mode cannot do.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class SessionProcessMetrics:
    """The directory where this server's session processes count, and the reading of it."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="voice-agent-metrics-")
        self.path = self._directory.name
        self._retired: list[Sample] = []  # what exited session processes counted, summed

    def environment(self) -> dict[str, str]:
        """What a session process's environment needs for its counts to reach /metrics."""
        return {MULTIPROC_DIR_VARIABLE: self.path}

    def process_ended(self, pid: int) -> None:
        """Fold an exited session process's counts into memory and delete its files.

        (Both this and `/metrics` run on the event loop: a scrape never reads a file this
        is deleting.)"""
        mark_process_dead(pid, self.path)
        files = glob.glob(os.path.join(self.path, f"*_{pid}.db"))
        merged = MultiProcessCollector.merge(files, accumulate=True)
        counted = [sample for metric in merged for sample in metric.samples]
        self._retired = _summed(self._retired + counted)
        for file in files:
            os.remove(file)

    def counted_everywhere(self, counters: Iterable[Counter]) -> Collector:
        """A collector of `counters` with their session processes' counts added in."""
        return _CountersAcrossProcesses(list(counters), self.path, lambda: self._retired)

    def close(self) -> None:
        self._directory.cleanup()


class _CountersAcrossProcesses(Collector):
    def __init__(self, counters: list[Counter], path: str, retired: Callable[[], list[Sample]]):
        self._counters = counters
        self._files = MultiProcessCollector(None, path)
        self._retired = retired

    def describe(self) -> Iterator[Metric]:
        for counter in self._counters:
            yield from counter.describe()

    def collect(self) -> Iterator[Metric]:
        theirs: dict[str, list[Sample]] = {}
        for family in self._files.collect():
            theirs.setdefault(family.name, []).extend(family.samples)
        for sample in self._retired():
            theirs.setdefault(sample.name.removesuffix("_total"), []).append(sample)
        for counter in self._counters:
            for family in counter.collect():
                if (other := theirs.get(family.name)) is not None:
                    family.samples = _summed(family.samples + other)
                yield family


def _summed(samples: list[Sample]) -> list[Sample]:
    """One sample per name and labels, the values added up."""
    totals: dict[tuple, Sample] = {}
    for sample in samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        if key in totals:
            totals[key] = totals[key]._replace(value=totals[key].value + sample.value)
        else:
            totals[key] = sample
    return list(totals.values())
