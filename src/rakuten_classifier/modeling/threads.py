"""The threads models run on: one inference thread per serving worker, single-threaded pools for parallel views.

Used by serving (every model load and call) and by CPU feature extraction in training. Nothing here
imports torch: ONNX Runtime sets its threads per session (``onnx_runtime.session_options``), and
torch's thread count is set on each pool thread only once something else has imported torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class ModelThreads(ThreadPoolExecutor):
    """Threads whose torch, once imported, runs ``torch_threads`` threads each (None: torch's setting).

    Checked before every task rather than at thread start: a serving worker's inference thread
    starts with the model load, which is what imports torch when a version has no ONNX graph.
    """

    def __init__(self, workers: int, torch_threads: int | None, name: str):
        super().__init__(max_workers=workers, thread_name_prefix=name)
        self.torch_threads = torch_threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(self._run, fn, *args, **kwargs)

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        torch = sys.modules.get("torch")
        if self.torch_threads and torch is not None and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)  # per thread (OpenMP), so set on the pool's own
        return fn(*args, **kwargs)


def inference_thread(torch_threads: int | None = None) -> ThreadPoolExecutor:
    """A one-thread executor for every model load and model call of a serving worker.

    Why one thread: torch's OpenMP runtime (GNU libgomp) gives each thread that runs a parallel op
    its own team of worker threads, and once the teams together outnumber the cores it stops
    spin-waiting between ops and puts its threads to sleep. A MobileNetV2 forward is a few hundred
    short parallel ops, each then paying a wake-up: on 2 cores one image took 62 ms when the model
    was loaded on one thread and called from another (BentoML runs sync endpoints in a thread
    pool) against 25-28 ms with load and calls on the same thread (docs/benchmarks.md, "Worker layout").
    """
    return ModelThreads(1, torch_threads, "inference")


def single_thread_torch_pool(count: int) -> ThreadPoolExecutor:
    """Threads that each run torch single-threaded (the service's test-time views, CPU feature extraction).

    Single-threaded torch creates no OpenMP team, so nothing spins or sleeps between ops, and a
    thread preempted by another process on a busy 2-core box delays only its own work instead of
    stalling a 2-thread team at every op. ONNX Runtime's sessions get their own thread count.
    """
    return ModelThreads(count, 1, "torch1")
