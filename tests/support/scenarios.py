"""Small applications that use trubrics_mp, each run as its own Python process.

``python -m support.scenarios NAME JSON_ARGS`` (with ``tests/`` on the path)
runs one scenario; it reports by printing JSON lines on stdout. The pytest
process only orchestrates: it never forks, so every fork here happens in a
process that looks like a real application.

Every event carries ``properties = {"src": <label>, "seq": <n>}`` so that
tests can count deliveries per event and spot duplicates.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from trubrics_mp import Trubrics

API_KEY = "test-api-key-7f3a9c"
TESTS_DIR = Path(__file__).resolve().parent.parent
Args = dict[str, Any]


def emit(**data: Any) -> None:
    print(json.dumps(data), flush=True)


def make_client(args: Args) -> Trubrics:
    options = {"flush_at": 20, "flush_interval": 0.2, **args.get("options", {})}
    return Trubrics(API_KEY, args["url"], **options)


def track_many(client: Trubrics, src: str, count: int, start: int = 0, llm: bool = False) -> None:
    for seq in range(start, start + count):
        properties = {"src": src, "seq": seq}
        if llm:
            client.track_llm(
                user_id=f"user-{src}",
                prompt=f"prompt {seq}",
                generation=f"generation {seq}",
                assistant_id="gpt-4o",
                properties=properties,
                latency=0.5,
                thread_id="thread-1",
            )
        else:
            client.track(user_id=f"user-{src}", event="Sign up", properties=properties)


def track_timed(client: Trubrics, src: str, count: int) -> float:
    """``track_many``, one call at a time; the seconds the slowest ``track()`` took."""
    slowest = 0.0
    for seq in range(count):
        started = time.perf_counter()
        client.track(user_id=f"user-{src}", event="Sign up", properties={"src": src, "seq": seq})
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


def flusher_pid(client: Trubrics) -> Optional[int]:
    return client.stats().flusher_pid


def buffered(client: Trubrics) -> int:
    """Events waiting in this process for room in the queue (the flusher is not asked)."""
    return client.stats(flusher=False).buffered


def pipeline_address(client: Trubrics) -> str:
    """The path of the flusher's socket (``stats().pipeline``)."""
    return client.stats(flusher=False).pipeline


def wait_gone(pid: int) -> None:
    """Wait until process ``pid`` (a flusher: no child of ours) has exited."""
    from support.processes import is_running, poll_until

    poll_until(lambda: not is_running(pid), 60, f"process {pid} to exit", interval=0.01)


def finish(how: str, client: Optional[Trubrics] = None) -> None:
    """Leave the process the way ``how`` says."""
    if how == "close" and client is not None:
        emit(closed=client.close(timeout=60))
    elif how == "flush" and client is not None:
        emit(flushed=client.flush(timeout=60))
    if how == "os_exit":
        os._exit(0)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "sys_exit":
        sys.exit(0)


# -- scenarios ----------------------------------------------------------------------
def basic(args: Args) -> None:
    """Owner tracks ``n`` events (and ``n_llm`` LLM events), then leaves as ``exit`` says."""
    client = make_client(args)
    emit(pid=os.getpid(), flusher_pid=flusher_pid(client), repr=repr(client))
    track_many(client, "owner", args.get("n", 10))
    track_many(client, "owner-llm", args.get("n_llm", 0), llm=True)
    if args.get("stats"):
        client.flush(timeout=60)
        emit(stats=client.stats().as_dict())
    finish(args.get("exit", "close"), client)


def _child_main(client: Trubrics, index: int, per_child: int, exit_how: str) -> None:
    track_many(client, f"child-{index}", per_child)
    if exit_how == "flush":
        client.flush(timeout=60)
    finish(exit_how)


def children(args: Args) -> None:
    """Children made by ``multiprocessing`` (any start method) share the owner's flusher."""
    client = make_client(args)
    track_many(client, "parent", args.get("n_parent", 0))
    context = multiprocessing.get_context(args["method"])
    exit_how = args.get("child_exit", "return")
    procs = [
        context.Process(target=_child_main, args=(client, i, args["per_child"], exit_how))
        for i in range(args["n_children"])
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    emit(exitcodes=[p.exitcode for p in procs], flusher_pid=flusher_pid(client))
    track_many(client, "parent-after", args.get("n_parent_after", 0))
    client.flush(timeout=60)
    emit(stats=client.stats().as_dict())
    finish(args.get("exit", "close"), client)


def _libc_fork() -> int:
    """fork(2) called from C, as uWSGI does: Python's at-fork hooks do not run."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid: int = libc.fork()
    return pid


def raw_fork(args: Args) -> None:
    """Children made by ``os.fork()`` or by a fork in C; the parent's buffer is not re-sent.

    With ``buffered``, the parent (its flusher stopped) tracks until its socket is
    full and that many events wait in its own buffer when it forks.
    """
    client = make_client(args)
    stalled = flusher_pid(client) if args.get("stall_flusher") else None
    if stalled is not None:
        os.kill(stalled, signal.SIGSTOP)
    if args.get("buffered"):
        from support.pool_scenarios import fill_until_buffered

        emit(n_parent=fill_until_buffered(client, "parent", args["buffered"]))
    else:
        track_many(client, "parent", args.get("n_parent", 0))
    emit(parent_buffered=buffered(client))
    fork: Callable[[], int] = _libc_fork if args["how"] == "libc" else os.fork
    pids = []
    for index in range(args["n_children"]):
        pid = fork()
        if pid == 0:
            track_many(client, f"child-{index}", args["per_child"])
            ok = client.flush(timeout=60) if args.get("child_flush") else True
            os._exit(0 if ok else 3)
        pids.append(pid)
    if stalled is not None:  # asked for before: a stopped flusher answers no stats
        os.kill(stalled, signal.SIGCONT)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    emit(exitcodes=codes)
    client.flush(timeout=60)
    emit(stats=client.stats().as_dict())
    finish("close", client)


def _pool_init(client: Trubrics) -> None:
    global _POOL_CLIENT
    _POOL_CLIENT = client


_POOL_CLIENT: Optional[Trubrics] = None


def _pool_task(seq: int) -> int:
    assert _POOL_CLIENT is not None
    _POOL_CLIENT.track(user_id="pool", event="Task", properties={"src": "pool", "seq": seq})
    return os.getpid()


def pool(args: Args) -> None:
    """``multiprocessing.Pool`` workers get the client through ``initializer``."""
    client = make_client(args)
    context = multiprocessing.get_context(args["method"])
    with context.Pool(
        args.get("processes", 2),
        initializer=_pool_init,
        initargs=(client,),
        maxtasksperchild=args.get("maxtasksperchild"),
    ) as workers:
        pids = workers.map(_pool_task, range(args["tasks"]), chunksize=1)
        if args.get("end") == "terminate":
            workers.terminate()
        else:
            workers.close()
            workers.join()
    emit(worker_pids=sorted(set(pids)))
    client.flush(timeout=60)
    emit(stats=client.stats().as_dict())
    finish("close", client)


def stall(args: Args) -> None:
    """The flusher is stopped: ``track()`` must return at once and buffer or count drops."""
    client = make_client(args)
    pid = flusher_pid(client) or 0
    os.kill(pid, signal.SIGSTOP)
    emit(slowest_track_s=track_timed(client, "stalled", args["n"]))
    local = client.stats(flusher=False)
    emit(stalled=local.queued, buffered=local.buffered, dropped=local.dropped)
    os.kill(pid, signal.SIGCONT)
    emit(flushed=client.flush(timeout=60))
    emit(stats=client.stats().as_dict())
    finish("close", client)


def threads(args: Args) -> None:
    """Threads of one process track at once while the flusher lags behind."""
    import threading

    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    client = make_client(args)
    pid = flusher_pid(client) or 0
    os.kill(pid, signal.SIGSTOP)
    workers = [
        threading.Thread(target=track_many, args=(client, f"thread-{i}", args["per_thread"]))
        for i in range(args["n_threads"])
    ]
    for worker in workers:
        worker.start()
    while not buffered(client) and any(w.is_alive() for w in workers):
        time.sleep(0.001)
    emit(buffered=buffered(client))
    os.kill(pid, signal.SIGCONT)  # the threads now drain the buffer while others add to it
    for worker in workers:
        worker.join()
    emit(flushed=client.flush(timeout=120))
    finish("close", client)


def foreign_uid(args: Args) -> None:
    """A process of another user cannot reach the flusher: its directory is ours alone."""
    import socket

    client = make_client(args)
    track_many(client, "owner", 1)
    client.flush(timeout=60)
    address = pipeline_address(client)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setuid(65534)  # nobody
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            raw.connect(address)
            reached = "yes"
        except PermissionError:
            reached = "no"
        os.write(write_fd, reached.encode())
        os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    emit(foreign_user_reached_the_socket=os.read(read_fd, 16).decode())
    finish("close", client)


def term_flusher(args: Args) -> None:
    """SIGTERM to the flusher (systemd, Docker): it serves on, then leaves, delivering."""
    client = make_client(args)
    old = flusher_pid(client) or 0
    os.kill(old, signal.SIGTERM)
    track_many(client, "after-term", args["n"])
    emit(flushed_during_grace=client.flush(timeout=60))
    wait_gone(old)  # it leaves by itself once shutdown_timeout has passed
    track_many(client, "after-exit", args["n"])
    emit(flushed_after_exit=client.flush(timeout=60), stats=client.stats().as_dict())
    finish("close", client)


_AFTER_EXEC = """
import json, os, sys
from support.processes import WaitTimeout, is_running, poll_until
flusher = int(sys.argv[1])
try:  # no longer connected: it lingers, then leaves
    poll_until(lambda: not is_running(flusher), 60, "the flusher to exit")
    left = True
except WaitTimeout:
    left = False
print(json.dumps({"flusher_left_after_exec": left}), flush=True)
"""


def exec_owner(args: Args) -> None:
    """The owner replaces its program, same pid (a uWSGI reload): the flusher leaves."""
    client = make_client(args)
    track_many(client, "before-exec", args["n"])
    pid = flusher_pid(client)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-c", _AFTER_EXEC, str(pid)])


def kill_flusher(args: Args) -> None:
    """The flusher is SIGKILLed; the next ``track()`` starts a new one."""
    client = make_client(args)
    track_many(client, "before", args["n"])
    emit(flushed_before=client.flush(timeout=60))
    old = flusher_pid(client) or 0
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    if args.get("then_close"):  # the owner's connection is stale: close() must cope
        emit(closed=client.close(timeout=60))
        return
    track_many(client, "after", args["n"])
    emit(flushed_after=client.flush(timeout=60), old=old, new=flusher_pid(client))
    emit(stats=client.stats().as_dict())
    finish("close", client)


def _pipeline_count(client: Trubrics, what: str) -> int:
    stats = client.stats()
    if what == "delivered":
        return stats.delivered or 0
    return sum(stats.received_by_pid.values())


def flusher_killed_holding(args: Args) -> None:
    """The flusher is SIGKILLed once it has ``wait_for`` ("received" or "delivered") the
    events of the owner and of a forked child; then each one flushes and reports."""
    client = make_client(args)
    n = args["n"]
    track_many(client, "owner", n)
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_w)
        track_many(client, "child", n)
        os.read(go_r, 1)  # the flusher is dead now
        flushed = client.flush(timeout=60)
        dropped = client.stats(flusher=False).dropped
        os.write(result_w, json.dumps([flushed, dropped]).encode())
        os._exit(0)
    os.close(go_r)
    os.close(result_w)
    deadline = time.monotonic() + 60
    while _pipeline_count(client, args["wait_for"]) < 2 * n and time.monotonic() < deadline:
        time.sleep(0.02)
    old = flusher_pid(client) or 0
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    os.write(go_w, b"x")
    flushed = client.flush(timeout=60)
    emit(owner_flushed=flushed, owner_dropped=client.stats(flusher=False).dropped)
    os.waitpid(child, 0)
    child_flushed, child_dropped = json.loads(os.read(result_r, 65536))
    emit(child_flushed=child_flushed, child_dropped=child_dropped)  # one writer: whole lines
    finish("close", client)


def flusher_killed_before_reading(args: Args) -> None:
    """With SIGPIPE at its default action (death on a write to a pipe nobody reads),
    the flusher is stopped, ``n`` events wait in this process's pipe, the flusher
    is SIGKILLed, ``n`` more are tracked; then this process flushes and reports."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    client = make_client(args)
    track_many(client, "warm-up", 1)
    assert client.flush(timeout=60)
    old = flusher_pid(client) or 0
    os.kill(old, signal.SIGSTOP)
    track_many(client, "before", args["n"])
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    track_many(client, "after", args["n"])
    flushed = client.flush(timeout=60)
    stats = client.stats()
    emit(flushed=flushed, dropped=stats.dropped, replaced=stats.flusher_pid != old)
    finish("close", client)


def _big_producer(client: Trubrics, index: int) -> None:
    blob = "x" * 20_000
    seq = 0
    while True:  # until SIGKILLed by the parent
        client.track(
            user_id="doomed",
            event="Big",
            properties={"src": f"doomed-{index}", "seq": seq, "blob": blob},
        )
        seq += 1


def killed_producers(args: Args) -> None:
    """Producers SIGKILLed while sending neither corrupt the queue nor block the others."""
    client = make_client(args)
    context = multiprocessing.get_context("fork")
    doomed = [context.Process(target=_big_producer, args=(client, i)) for i in range(3)]
    for proc in doomed:
        proc.start()
    for round_ in range(args.get("rounds", 20)):
        time.sleep(0.01 * (round_ % 5))
        for proc in doomed:
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
        doomed = [context.Process(target=_big_producer, args=(client, i)) for i in range(3)]
        for proc in doomed:
            proc.start()
    for proc in doomed:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    survivor = context.Process(target=_child_main, args=(client, 0, args["n"], "return"))
    survivor.start()
    survivor.join(120)
    emit(survivor_exit=survivor.exitcode, flushed=client.flush(timeout=120))
    emit(stats=client.stats().as_dict())
    finish("close", client)


def no_fork_warning(args: Args) -> None:
    """Creating the client then forking must not trigger 3.12's threads-and-fork warning."""
    client = make_client(args)
    pid = os.fork()
    if pid == 0:
        client.track(user_id="u", event="e", properties={"src": "forked", "seq": 0})
        os._exit(0)
    emit(exitcode=os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    finish("close", client)


def _flusher_peak_rss_kib(client: Trubrics) -> int:
    pid = client.stats().flusher_pid
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def burst(args: Args) -> None:
    """Default settings; ``n`` events tracked back to back right after construction.

    With ``processes`` > 1, that many forked children each track ``n`` at once
    (released together through a pipe), then leave through ``sys.exit``.
    """
    client = Trubrics(API_KEY, args["url"])
    processes = args.get("processes", 1)
    if processes == 1:
        track_many(client, "burst", args["n"])
        emit(local=client.stats(flusher=False).as_dict())
    else:
        go_r, go_w = os.pipe()
        pids = []
        for index in range(processes):
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                os.read(go_r, 1)  # end of file: every child starts at once
                track_many(client, f"child-{index}", args["n"])
                sys.exit(0)  # atexit: the client hands over what it still buffers
            pids.append(pid)
        os.close(go_w)  # releases them all
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        emit(exitcodes=codes)
    emit(flushed=client.flush(timeout=600), peak_rss_kib=_flusher_peak_rss_kib(client))
    finish("close", client)


def many_keys(args: Args) -> None:
    """``n`` clients in this process, each with its own API key and ``flush_at``; each
    tracks ``per_client`` events (``src`` names the key). One flusher serves them all."""
    clients = [
        Trubrics(f"sk-key-{i}", args["url"], flush_at=1 + i % 7, flush_interval=0.5)
        for i in range(args["n"])
    ]
    for index, client in enumerate(clients):
        track_many(client, f"key-{index}", args["per_client"])
    emit(flushed=all(client.flush(timeout=120) for client in clients))
    stats = [client.stats() for client in clients]
    emit(
        flusher_pids=sorted({s.flusher_pid or 0 for s in stats}),
        processes=stats[0].processes,
        peak_rss_kib=_flusher_peak_rss_kib(clients[0]),
    )
    emit(closed=all(client.close(timeout=60) for client in clients))


def idle_parent(args: Args) -> None:
    """The parent tracks nothing; a forked child tracks ``n`` and leaves by
    ``os._exit``. The parent's flush() waits for the child's events: first with a
    short timeout (the API is down: False; then it says so with a file in its
    working directory), then, once the test's file appears (the API is back),
    until they are delivered."""
    client = make_client(args)
    pid = os.fork()
    if pid == 0:
        track_many(client, "child", args["n"])
        os._exit(0)
    os.waitpid(pid, 0)
    emit(first=client.flush(timeout=2.0))
    Path("first-flush-done").touch()
    go = Path(args["go_file"])
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    emit(second=client.flush(timeout=60))
    finish("close", client)


def group_killed(args: Args) -> None:
    """As RQ stops a job: this process leads its own group, tracks ``n`` events and
    the whole group is SIGKILLed at once (the flusher is in no client's group)."""
    os.setpgid(0, 0)
    client = make_client(args)
    emit(flusher_pid=flusher_pid(client))
    track_many(client, "job", args["n"])
    os.killpg(0, signal.SIGKILL)


_PR_SET_CHILD_SUBREAPER = 36


def reaping_host(args: Args) -> None:
    """A host that reaps every orphan below it, as an init (tini) does: it runs
    ``runs`` applications one after the other, then reaps until no child is left,
    and says which pids it reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    apps = []
    for _ in range(args["runs"]):
        child = {"url": args["url"], "n": 5, "exit": "close"}
        app = subprocess.run(  # stderr not captured: a flusher it starts would keep it
            [sys.executable, "-m", "support.scenarios", "basic", json.dumps(child)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=True,
        )
        apps.append(json.loads(app.stdout.splitlines()[0]))
    reaped = []
    while True:  # the flusher was reparented to us: it is reaped here once it leaves
        try:
            reaped.append(os.waitpid(-1, 0)[0])
        except ChildProcessError:
            break
    emit(flusher_pids=sorted({a["flusher_pid"] for a in apps}), reaped=reaped)


SCENARIOS: dict[str, Callable[[Args], None]] = {
    f.__name__: f
    for f in (
        basic,
        many_keys,
        idle_parent,
        group_killed,
        reaping_host,
        threads,
        foreign_uid,
        term_flusher,
        exec_owner,
        children,
        raw_fork,
        pool,
        stall,
        kill_flusher,
        flusher_killed_holding,
        flusher_killed_before_reading,
        killed_producers,
        no_fork_warning,
        burst,
    )
}


class AppRunner:
    """Runs scenarios as separate processes against one collector."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path

    module = "support.scenarios"

    def command(self, name: str, python_flags: tuple[str, ...] = (), **args: Any) -> list[str]:
        payload = json.dumps({"url": self.url, **args})
        return [sys.executable, *python_flags, "-m", self.module, name, payload]

    def env(self) -> dict[str, str]:
        path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
        return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}

    def run(
        self,
        name: str,
        *,
        expect_rc: Optional[int] = 0,
        timeout: float = 180,
        python_flags: tuple[str, ...] = (),
        **args: Any,
    ) -> AppResult:
        proc = subprocess.run(
            self.command(name, python_flags, **args),
            env=self.env(),
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = AppResult(proc.returncode, proc.stdout, proc.stderr)
        if expect_rc is not None and proc.returncode != expect_rc:
            raise AssertionError(f"scenario {name} exited {proc.returncode}:\n{result}")
        return result


class AppResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]

    def get(self, key: str) -> Any:
        """The last value reported under ``key``."""
        for line in reversed(self.lines):
            if key in line:
                return line[key]
        raise KeyError(f"{key!r} not reported; stdout:\n{self.stdout}\nstderr:\n{self.stderr}")

    def __str__(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def main() -> None:
    name, payload = sys.argv[1], json.loads(sys.argv[2])
    SCENARIOS[name](payload)


if __name__ == "__main__":
    main()
