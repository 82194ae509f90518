"""Where a study's trials run: worker processes on this machine (LocalExecutor, the default) or the workers of a
dask.distributed cluster (DaskExecutor).

An executor is a context manager with

  name                     words for the progress display ("local", "dask tcp://10.0.0.5:8786")
  notes()                  lines for the driver to print once started (warnings about the cluster)
  run(config, specs)       yields each trial's result dict as it finishes (in finishing order); a trial whose worker
                           died, or that raised, is rerun up to `retries` times; trials that still fail are raised
                           together as TrialError once every other trial of the batch has finished
  call_alone(func, *args)  (host, func(*args)) run on the machine the trials will run on, while no trial is
                           running: the driver measures compute speed with it (this process for the local pool and
                           a LocalCluster; for a remote cluster a fresh process on one worker's machine, and the
                           rows then name that host)

Workers only compute: each trial comes back as a plain dict of arrays, and only the driver writes the study file.
Every worker process uses `threads` BLAS threads and `threads` Numba threads (one by default), so the workers
together fill the cores without oversubscribing them.
"""
import multiprocessing
import os
import signal
import socket
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from minigrad import __version__
from minigrad.machine.threads import set_process_threads
from minigrad.training.trial import run_trial

DEFAULT_RETRIES = 3


class TrialError(RuntimeError):
    """Some trials failed on every attempt; the trials that finished are stored, a rerun resumes."""

    def __init__(self, failures, executor):
        self.failures = failures  # [(run_id, exception)]
        run_id, exc = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(f"{len(failures)} trial(s) failed on the {executor} executor after retries: {run_id}{more}: "
                         f"{type(exc).__name__}: {exc}; the finished trials are stored, rerun the same command to "
                         "resume")


# ------------------------------------------------------------------------------------------- worker-side code
_THREAD = threading.local()


def setup_thread(threads=1):
    """set_process_threads once per worker thread: BLAS limits are per process, Numba's thread count is per thread
    (a dask worker runs tasks on a thread of its own, not on the one a plugin would set up). A BLAS loaded later
    (scipy's, on the first trial) reads OMP_NUM_THREADS, which set_process_threads sets."""
    if getattr(_THREAD, "threads", None) != threads:
        _THREAD.limits = set_process_threads(threads)
        _THREAD.threads = threads


def thread_settings():
    """(BLAS threads of each loaded BLAS, Numba threads) as this worker thread sees them."""
    import numba
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"], \
        numba.get_num_threads()


def trial_task(config, spec, threads=1, version=None):
    """One trial on a worker: minigrad.training.trial.run_trial, with the worker's host recorded in the run's attrs."""
    if version is not None and version != __version__:
        raise RuntimeError(f"worker {socket.gethostname()} has minigrad {__version__}, the driver {version}: install "
                           "the same version on every worker")
    setup_thread(threads)
    result = run_trial(config, spec)
    blas, numba_threads = thread_settings()  # after the trial: every BLAS it uses is loaded
    result["attrs"]["host"] = socket.gethostname()
    # not stored: for the driver's bookkeeping and the tests
    result["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "blas_threads": blas,
                        "numba_threads": numba_threads}
    return result


def _exit_with_parent(parent):
    """Pool initializer: a worker whose driver was killed (SIGKILL runs no cleanup) exits within a second instead of
    finishing its trial for nobody while a resumed study wants the cores."""
    import signal
    import time

    # Ctrl-C (and a closed terminal's SIGHUP) reaches the whole process group: the driver stops the workers, which
    # must not print tracebacks of it
    # (SIGTERM too: a scheduler's SIGTERM to the group must not kill them before the driver stops them itself)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from minigrad.machine import notices

    notices.install()  # a warning in a trial reaches the terminal as the driver's do: one line, no source path

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="minigrad-parent-watch", daemon=True).start()


def _on_host(func, args):
    return socket.gethostname(), func(*args)


# set by dask's nanny (1 each) before a worker starts, so a BLAS in the worker can never use more threads
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _in_fresh_process(func, args):
    """(host, func(*args)) computed in a new Python process on this worker's machine, without the worker's thread
    limits: compute speed measured there is the machine's, as a driver measures its own."""
    import pickle
    import subprocess
    import sys
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the modules the worker sees
    code = ("import pickle, sys\n"
            "with open(sys.argv[1], 'rb') as f:\n    func, args = pickle.load(f)\n"
            "value = func(*args)\n"
            "with open(sys.argv[2], 'wb') as f:\n    pickle.dump(value, f)\n")
    with tempfile.TemporaryDirectory(prefix="minigrad-") as tmp:
        call, result = os.path.join(tmp, "call.pickle"), os.path.join(tmp, "result.pickle")
        with open(call, "wb") as f:
            pickle.dump((func, args), f)
        done = subprocess.run([sys.executable, "-c", code, call, result], env=env, capture_output=True, text=True,
                              check=False)
        if done.returncode:
            raise RuntimeError(f"{getattr(func, '__name__', func)} failed on {socket.gethostname()}: "
                               f"{done.stderr.strip()[-2000:]}")
        with open(result, "rb") as f:
            return socket.gethostname(), pickle.load(f)


# ------------------------------------------------------------------------------------------------ this process
class InlineExecutor:
    """Trials one after another in this process, with this process's threads: for a single trial, a debugger, or a
    notebook. A trial that raises is rerun up to `retries` times (a deterministic error fails every time)."""

    name = "inline"

    def __init__(self, *, retries=0):
        self.retries = retries
        self.workers_of = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def notes(self):
        return []

    def call_alone(self, func, *args):
        return _on_host(func, args)

    def run(self, config, specs):
        failures = []
        for spec in specs:
            for attempt in range(self.retries + 1):
                try:
                    result = run_trial(config, spec)
                except Exception as exc:  # noqa: BLE001 - reported with the trial's id, below
                    error = exc
                    continue
                result["attrs"]["host"] = socket.gethostname()
                yield result
                break
            else:
                failures.append((spec.run_id, error))
        if failures:
            raise TrialError(failures, self.name) from failures[0][1]


# ------------------------------------------------------------------------------------------------ local pool
class LocalExecutor:
    """Worker processes on this machine, `threads` BLAS and Numba threads each (default: one process per core).

    A worker process that dies (killed, out of memory) breaks the whole pool: the pool is restarted and the trials
    it had not finished are submitted again, each at most `retries` more times."""

    name = "local"

    def __init__(self, workers=None, *, threads=1, retries=DEFAULT_RETRIES):
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1 or threads < 1 or retries < 0:
            raise ValueError("workers and threads must be >= 1 and retries >= 0")
        self.threads, self.retries = threads, retries
        self._pool = None
        self.restarts = 0  # pools replaced after a worker died
        self._depth = 0
        self.workers_of = {}  # run id -> the worker that computed it: host, pid, BLAS and Numba threads

    def _start(self):
        from minigrad.machine.interrupts import helpers_ignore_hangup

        helpers_ignore_hangup()
        # spawn, not fork: the driver has BLAS and Numba threads running after measuring throughput
        # (each worker sets its threads in trial_task)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_exit_with_parent, initargs=(os.getpid(),))

    def __enter__(self):
        # re-entrant: a caller may start the workers once and run several studies on them
        if self._depth == 0:
            self._start()
        self._depth += 1
        return self

    def __exit__(self, exc_type, *exc):
        self._depth -= 1
        if self._depth == 0:
            if exc_type is not None:  # Ctrl-C or an error: stop the workers now rather than finish their trials
                for process in list((self._pool._processes or {}).values()):
                    process.kill()  # SIGKILL: the workers ignore SIGTERM (see _exit_with_parent)
            self._pool.shutdown(wait=exc_type is None, cancel_futures=True)
            self._pool = None

    def notes(self):
        return []

    def pids(self):
        """The worker processes' ids (the pool starts them on the first submission)."""
        return sorted(self._pool._processes or ()) if self._pool is not None else []

    def call_alone(self, func, *args):
        """In this process: the driver is the machine the trials run on."""
        return _on_host(func, args)

    def run(self, config, specs):
        attempts = {spec.run_id: 0 for spec in specs}
        pending, failures = list(specs), []
        while pending:
            futures = {self._pool.submit(trial_task, config, spec, self.threads): spec for spec in pending}
            pending, broken = [], False
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a trial's error is reported with its id, below
                    # A dead worker fails every unfinished future of the pool; which trial it was running cannot
                    # be told, so each of them is charged one attempt.
                    broken = broken or isinstance(exc, BrokenProcessPool)
                    attempts[spec.run_id] += 1
                    if attempts[spec.run_id] <= self.retries:
                        pending.append(spec)
                    else:
                        failures.append((spec.run_id, exc))
                    continue
                self.workers_of[result["run_id"]] = result["worker"]
                yield result
            if broken:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self.restarts += 1
                self._start()
        if failures:
            raise TrialError(failures, self.name) from failures[0][1]


# ------------------------------------------------------------------------------------------------ dask
def _need_distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError("--executor dask needs dask.distributed: pip install 'minigrad[dask]'") from None
    return distributed


class DaskExecutor:
    """The workers of a dask.distributed cluster: `scheduler` is its address (tcp://host:8786), a
    distributed.Client, or None to start a LocalCluster of `workers` processes (one per core by default) on
    this machine, on loopback.

    Faults: a trial whose worker dies is rescheduled by the scheduler on another worker, up to its
    distributed.scheduler.allowed-failures times (the LocalCluster started here: `retries`; a scheduler you start:
    its own setting, 3 by default); a trial that raises is rerun `retries` times. Only the driver writes the study
    file, and it writes a trial once, when its result arrives.
    """

    def __init__(self, scheduler=None, *, workers=None, threads=1, retries=DEFAULT_RETRIES, timeout=30):
        if threads < 1 or retries < 0 or (workers is not None and workers < 1):
            raise ValueError("workers and threads must be >= 1 and retries >= 0")
        if workers is not None and scheduler is not None:
            raise ValueError("the number of workers is the cluster's: give workers only without a scheduler address")
        self.scheduler, self.workers, self.threads, self.retries, self.timeout = \
            scheduler, workers, threads, retries, timeout
        self.client = self.cluster = None
        self._own_client = False
        self._depth = 0
        self.workers_of = {}  # run id -> the worker that computed it: host, pid, BLAS and Numba threads

    @property
    def name(self):
        if self.client is None:
            return "dask"
        return f"dask {'LocalCluster ' if self.cluster is not None else ''}{self.client.scheduler.address}"

    def __enter__(self):
        # re-entrant: a caller may connect once and run several studies
        if self._depth == 0:
            self._connect()
        self._depth += 1
        return self

    def _connect(self):
        distributed = _need_distributed()
        import dask

        if isinstance(self.scheduler, distributed.Client):
            self.client = self.scheduler
            return
        if self.scheduler:
            try:
                self.client = distributed.Client(self.scheduler, set_as_default=False, timeout=self.timeout)
            except OSError as exc:
                raise ValueError(f"cannot reach the dask scheduler at {self.scheduler}: {exc}") from None
        else:
            n = str(self.threads)
            # Set before a worker process starts, so BLAS reads them when it loads (dask sets 1 by default).
            environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                           OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
            # The worker processes inherit an ignored SIGINT: Ctrl-C reaches the whole process group, and the driver
            # alone should answer it (it closes the cluster), not every worker with a traceback.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                with dask.config.set({"distributed.scheduler.allowed-failures": self.retries,
                                      "distributed.nanny.pre-spawn-environ": environ}):
                    self.cluster = distributed.LocalCluster(
                        n_workers=self.workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address="127.0.0.1:0")
            finally:
                signal.signal(signal.SIGINT, previous)
            try:
                self.client = distributed.Client(self.cluster, set_as_default=False)
            except BaseException:
                self.cluster.close()
                self.cluster = None
                raise
        self._own_client = True

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth > 0:
            return
        try:
            if self._own_client:
                self.client.close()
        finally:
            self._own_client = False
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None

    def notes(self):
        from distributed.comm import get_address_host

        nthreads = self.client.nthreads()  # {worker address: threads}, every worker
        hosts = {get_address_host(address) for address in nthreads}
        lines = [f"dask: {len(nthreads)} worker(s) on {len(hosts)} host(s) at {self.client.scheduler.address}"
                 + (" (trials wait until workers join)" if not nthreads else "")]
        crowded = sorted(a for a, n in nthreads.items() if n > 1)
        if crowded:
            lines.append(f"dask: {len(crowded)} worker(s) run several threads (e.g. {crowded[0]}): their trials share "
                         "one process and its BLAS; start workers with `dask worker ... --nthreads 1 --nworkers N`")
        return lines

    def call_alone(self, func, *args):
        """Before any trial is submitted. A LocalCluster started here runs on this machine: in this process, as
        the local executor does. Otherwise on the machine of one worker (the first by address), in a new process
        free of the worker's one-thread limits."""
        if self.cluster is not None:
            return _on_host(func, args)
        self.client.wait_for_workers(1)
        address = min(self.client.nthreads())
        future = self.client.submit(_in_fresh_process, func, args, workers=[address], allow_other_workers=False,
                                    pure=False, key=f"minigrad-alone-{uuid.uuid4().hex[:8]}")
        return future.result()

    def run(self, config, specs):
        distributed = _need_distributed()
        token = uuid.uuid4().hex[:8]
        futures = {self.client.submit(trial_task, config, spec, self.threads, __version__, pure=False,
                                      retries=self.retries, key=f"{spec.run_id}-{token}"): spec
                   for spec in specs}
        failures = []
        try:
            for future in distributed.as_completed(futures, loop=self.client.loop):  # as they land
                spec = futures[future]
                if future.status == "finished":
                    result = future.result()
                    future.release()
                    self.workers_of[result["run_id"]] = result["worker"]
                    yield result
                else:
                    exc = future.exception() if future.status == "error" else RuntimeError(f"trial {future.status}")
                    failures.append((spec.run_id, exc))
        finally:
            # the driver stops early (an exception, Ctrl-C): take back what the cluster still has of this batch
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                self.client.cancel(unfinished)
        if failures:
            raise TrialError(failures, self.name) from failures[0][1]
