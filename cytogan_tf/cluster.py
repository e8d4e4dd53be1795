"""Dask scale-out for prepare and profile (`--scheduler ADDRESS|local`, extra `.[dask]`).

Why Dask: it is the bioimage field's distributed engine (dask-jobqueue for SLURM/PBS/LSF,
dask-kubernetes, cloud clusters), and it brings what a hand-made pool lacks: a lost
worker's tasks are re-run elsewhere, and a dashboard shows the work. The client (the
`cytogan` command) plans, submits one task per image set or shard, gathers the results in
submission order and writes every output itself, so the files are byte-identical to an
in-process run. TensorFlow and the SavedModel are imported and loaded on the workers.

`local` starts a LocalCluster of `--workers` single-threaded processes owned by this
command. Its nannies run inside the command and Dask's worker processes watch their
parent, so a SIGKILLed command leaves no process behind (measured: all gone within 0.1 s;
tests/test_cluster.py checks every descendant PID). This replaces nothing of the
`--workers` pool, which stays the default for one machine: it starts in a fraction of
the time and its workers exit with the command too (cytogan_tf.workers).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterable, Iterator

from .errors import DataError

RETRIES = 3  # a task whose worker died is re-run up to this many times
log = logging.getLogger(__name__)


def _require_dask():
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise DataError("--scheduler needs Dask: pip install 'cytogan-tf[dask]' "
                        "(dask[distributed])")


@contextlib.contextmanager
def dask_client(scheduler, workers: int = 1, *, quiet: bool = False):
    """A connected `distributed.Client`: a new LocalCluster for "local", the scheduler at
    `scheduler` (tcp://host:8786, or a scheduler file path), or `scheduler` itself when
    it is already a Client (a notebook's; left open, and its workers stay warm)."""
    _require_dask()
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1,
                               processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:
            if scheduler.endswith(".json") and os.path.isfile(scheduler):
                client = Client(scheduler_file=scheduler)
            else:  # waits distributed.comm.timeouts.connect (30 s) for the scheduler
                client = Client(scheduler)
        except OSError as exc:
            raise DataError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    link = client.dashboard_link
    if link and not quiet:
        log.warning("dask dashboard: %s", link)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_in_order(client, fn: Callable, items: Iterable, *, key: str) -> Iterator:
    """fn(item) for every item on the cluster, yielded in the items' order.

    All tasks are submitted at once (the cluster runs them as workers free up); results
    are released as soon as they are yielded, so the client holds few at a time.
    """
    import uuid

    items = list(items)
    token = uuid.uuid4().hex[:8]  # a shared scheduler may run other jobs' tasks of the same name
    futures = client.map(fn, items, key=[f"{key}-{token}-{i}" for i in range(len(items))],
                         pure=False, retries=RETRIES)
    try:
        for i, fut in enumerate(futures):
            yield fut.result()
            futures[i] = None
    finally:  # stopped early (an error, a close): nothing left should keep running
        left = [f for f in futures if f is not None]
        if left and client.status == "running":
            client.cancel(left)
