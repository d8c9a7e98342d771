"""The threads torch runs on: one inference thread per serving worker, single-threaded pools for parallel views.

Used by serving (every model load and call) and by CPU feature extraction in training.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def _torch_executor(workers: int, torch_threads: int | None, name: str) -> ThreadPoolExecutor:
    """Threads whose torch uses ``torch_threads`` threads each (None: leave torch's setting alone)."""

    def set_threads() -> None:
        if torch_threads:
            import torch  # lazy: the TF-IDF text worker never needs torch

            torch.set_num_threads(torch_threads)

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=set_threads)


def inference_thread(torch_threads: int | None = None) -> ThreadPoolExecutor:
    """A one-thread executor for every model load and model call of a serving worker.

    Why one thread: torch's OpenMP runtime (GNU libgomp) gives each thread that runs a parallel op
    its own team of worker threads, and once the teams together outnumber the cores it stops
    spin-waiting between ops and puts its threads to sleep. A MobileNetV2 forward is a few hundred
    short parallel ops, each then paying a wake-up: on 2 cores one image took 62 ms when the model
    was loaded on one thread and called from another (BentoML runs sync endpoints in a thread
    pool) against 25-28 ms with load and calls on the same thread (docs/benchmarks.md, "Worker layout").
    """
    return _torch_executor(1, torch_threads, "inference")


def single_thread_torch_pool(count: int) -> ThreadPoolExecutor:
    """Threads that each run torch single-threaded (the service's test-time views, CPU feature extraction).

    Single-threaded torch creates no OpenMP team, so nothing spins or sleeps between ops, and a
    thread preempted by another process on a busy 2-core box delays only its own work instead of
    stalling a 2-thread team at every op.
    """
    return _torch_executor(count, 1, "torch1")
