"""Running units of work as tasks on a Ray cluster (``--engine ray``).

Ray is an optional dependency (``pip install 'itmfilter[ray]'``) and is imported only
here, only when a distributed run is asked for: the local path never imports it.

* :func:`connect`: join the cluster at ``address`` (``auto``: the one ``ray start`` made
  on this machine; ``ray://host:10001``: a remote head through Ray Client; ``None``: a new
  local instance using this machine's cores). An already initialised Ray is used as it
  is (a caller, a notebook or a test, made it).
* :func:`run_tasks`: map a module-level function over picklable work items as Ray tasks
  (one CPU each, retried by Ray when a worker dies), yielding ``(item, result)`` as they
  finish. A Ray that :func:`connect` starts or joins ships this package's code with the
  job (``py_modules``), so every worker runs exactly the driver's code; the workers need
  the package's dependencies (torch, PyAV, ...) installed, and must reach the files the
  items name.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from itmfilter.errors import ItmError

DEFAULT_RETRIES = 3
"""Times Ray re-runs a task whose worker died (killed, out of memory, node lost)."""

_PACKAGE = Path(__file__).resolve().parent


def _ray():
    try:
        import ray
    except ImportError:
        raise ItmError(None, "--engine ray needs Ray, which is not installed",
                       "pip install 'itmfilter[ray]' (or use the default --engine local)") from None
    return ray


@contextlib.contextmanager
def connect(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Ray initialised for the ``with`` block; a Ray this call started is shut down after it."""
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    kwargs = {"log_to_driver": False, "configure_logging": False}
    try:
        # Ray uploads a code folder only for a whole job, i.e. here
        kwargs["runtime_env"] = {"py_modules": [os.fspath(_PACKAGE)]}
        if address in (None, "", "local"):
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)  # never a stale `ray start`
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ItmError(None, f"cannot join a Ray cluster at {address!r}: {exc}".splitlines()[0],
                       "start one (ray start --head), give its address (--address ray://host:10001), "
                       "or leave --address out for a local instance") from None
    try:
        yield
    finally:
        ray.shutdown()


def code_env() -> dict:
    """The tasks' runtime environment: one OpenMP thread, MKL's thread-count-independent
    products (as :mod:`itmfilter` sets them for the driver), and this package's folder first on
    ``PYTHONPATH`` (workers that share this file system, e.g. a Ray that the caller started
    without the code, import the driver's copy; elsewhere the path does not exist and the
    copy :func:`connect` shipped is imported)."""
    return {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_CBWR": os.environ.get("MKL_CBWR", "AUTO,STRICT"),
                         "PYTHONPATH": os.fspath(_PACKAGE.parent)}}


@functools.lru_cache(maxsize=None)
def _remote(func: Callable, retries: int):
    return _ray().remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(func)


def run_tasks(func: Callable, items: Iterable, *args, retries: int = DEFAULT_RETRIES) -> Iterator[tuple[object, object]]:
    """``(item, func(item, *args))`` for every item, in completion order, each call a Ray
    task; ``args`` are put in the object store once. A task that raises (after Ray's
    retries of dead workers) raises here: an :class:`ItmError` as itself, anything else as
    an :class:`ItmError` naming the item. Pending tasks are cancelled when the caller
    stops early (an error, Ctrl-C)."""
    ray = _ray()
    remote = _remote(func, retries).options(runtime_env=code_env())
    shared = [ray.put(a) for a in args]
    pending = {remote.remote(item, *shared): item for item in items}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, ItmError):
                        raise cause from None
                    raise ItmError(None, f"{item} failed on the cluster: {type(cause or exc).__name__}: "
                                   f"{cause or exc}".splitlines()[0], "see the worker's log (ray logs)") from None
                except ray.exceptions.RayError as exc:
                    raise ItmError(None, f"{item} was lost on the cluster ({type(exc).__name__}) after "
                                   f"{retries} retries", "check the workers (ray status), then run again: "
                                   "finished work is kept") from None
                yield item, result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
