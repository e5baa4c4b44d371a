"""Shared plumbing for the benchmarks: free ports, temp configs, child processes
that are always stopped, CloudEvent bodies of a given size, percentiles.

Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """Return n distinct free ports (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def hookbus_command() -> list[str]:
    """The `hookbus` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "hookbus"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "hookbus.cli"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_config(path: Path, *, data_dir: Path, control_port: int, publish_port: int, http_port: int | None,
                 subscribers: Sequence[dict[str, Any]] = (), bus: dict[str, Any] | None = None) -> Path:
    """Write a hookbus TOML config on loopback ports; return its path."""
    lines = ["[bus]", f"data_dir = {_toml_value(str(data_dir))}",
             f"control = {_toml_value(f'tcp://{HOST}:{control_port}')}",
             f"publish = {_toml_value(f'tcp://{HOST}:{publish_port}')}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (bus or {}).items()]
    lines += ["", "[http]"]
    if http_port is None:
        lines.append("enabled = false")
    else:
        lines.append(f"listen = {_toml_value(f'{HOST}:{http_port}')}")
    for sub in subscribers:
        lines += ["", "[[subscribers]]"] + [f"{k} = {_toml_value(v)}" for k, v in sub.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


try:  # loaded here, in the parent, so the child only makes one call
    _prctl: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except OSError:
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the benchmark process dies,
    so that nothing is left running even if the benchmark is killed hard."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Child processes that are always stopped (SIGTERM, then SIGKILL) on exit,
    including on errors and Ctrl-C. Each child's output goes to a log file."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str], *, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout_pipe else out,
                stderr=out, cwd=REPO, preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.procs.append((name, proc, log))
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 30) -> str:
        for _, p, log in self.procs:
            if p is proc:
                try:
                    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                except OSError:
                    return ""
        return ""

    def check_alive(self, proc: subprocess.Popen[bytes], name: str) -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{self.log_tail(proc)}")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError) as exc:  # keep stopping the others
                print(f"bench: could not stop pid {proc.pid}: {exc}", file=sys.stderr)
        self.procs.clear()


def wait_port(port: int, proc: subprocess.Popen[bytes], procs: Processes, name: str, timeout: float = 20.0) -> None:
    """Wait until 127.0.0.1:port accepts TCP connections (the child listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive(proc, name)
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {HOST}:{port} within {timeout:.0f}s:\n{procs.log_tail(proc)}")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds used so far by a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children, live and reaped (a PostgreSQL server's backends)."""
    def stat(p: int) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    try:
        fields = stat(pid)
    except OSError:
        return float("nan")
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = stat(int(entry.name))
            except OSError:
                continue
            if int(child[1]) == pid:
                ticks += sum(int(v) for v in child[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_jiffies() -> tuple[int, int]:
    """(busy, steal) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, steal


class CpuWindow:
    """CPU use over a measured window: of the whole machine, of the given
    processes, of this process and of its reaped children (wrk). What is left
    over is other load on the machine, which makes a run less trustworthy."""

    def __init__(self, pids: dict[str, int], trees: dict[str, int] | None = None) -> None:
        """`trees`: processes counted with their children (a PostgreSQL server)."""
        self.pids = pids
        self.trees = trees or {}
        self.t0 = time.monotonic()
        self.m0 = _machine_jiffies()
        self.p0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.p0 |= {name: tree_cpu_seconds(pid) for name, pid in self.trees.items()}
        self.r0 = self._own()

    @staticmethod
    def _own() -> float:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # children waited for: wrk, stopped servers
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        tick = os.sysconf("SC_CLK_TCK")
        busy1, steal1 = _machine_jiffies()
        # a process already reaped is counted in RUSAGE_CHILDREN, i.e. under "bench"
        out = {f"{name}_cores": (now - self.p0[name]) / wall for name, pid in self.pids.items()
               if (now := cpu_seconds(pid)) == now}
        out |= {f"{name}_cores": (now - self.p0[name]) / wall for name, pid in self.trees.items()
                if (now := tree_cpu_seconds(pid)) == now}
        out["bench_cores"] = (self._own() - self.r0) / wall
        out["machine_cores"] = (busy1 - self.m0[0]) / tick / wall
        out["steal_cores"] = (steal1 - self.m0[1]) / tick / wall
        out["other_cores"] = max(0.0, out["machine_cores"] - out["bench_cores"]
                                 - sum(out.get(f"{n}_cores", 0.0) for n in (*self.pids, *self.trees)))
        return out


def describe_cpu(cpu: dict[str, float]) -> str:
    parts = [f"{k[:-6]} {v:.2f}" for k, v in cpu.items() if k not in ("machine_cores", "other_cores", "steal_cores")]
    return (f"CPU cores busy: machine {cpu['machine_cores']:.2f} of {os.cpu_count()} ("
            + ", ".join(parts) + f", other load {cpu['other_cores']:.2f}, steal {cpu['steal_cores']:.2f})")


def add_quiet_options(parser: Any) -> None:
    parser.add_argument("--max-other-load", type=float, default=0.15, metavar="CORES",
                        help="a measured run during which other processes kept more than this many cores busy "
                             "is repeated (default 0.15)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="measure each side at most this many times; the run with the least other load "
                             "is kept (default 3)")


def quiet_enough(result: dict[str, Any], attempt: int, args: Any) -> bool:
    """Whether to stop repeating a measurement: the machine was quiet, or no attempts are left."""
    other = result["cpu"]["other_cores"]
    if other <= args.max_other_load:
        return True
    if attempt + 1 >= args.attempts:
        print(f"          other load {other:.2f} cores in every attempt: kept the quietest; numbers are less reliable",
              flush=True)
        return True
    print(f"          other load {other:.2f} cores > {args.max_other_load:g}: measuring again", flush=True)
    return False


def quietest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: float(r["cpu"]["other_cores"]))


def until_quiet(args: Any, runs: list[dict[str, Any]]) -> Iterator[int]:
    """Yield attempt numbers; the loop body measures and appends its result to
    `runs`. Stops once a run was quiet (see quiet_enough) or no attempts are left."""
    for attempt in range(args.attempts):
        yield attempt
        if quiet_enough(runs[-1], attempt, args):
            return


def add_round_options(parser: Any, default: int = 5) -> None:
    parser.add_argument("--rounds", type=int, default=default,
                        help="measure baseline and hookbus alternately this many times; the result is the median of "
                             f"the rounds' ratios (default {default})")


def print_rounds(pairs: list[tuple[float, float]], unit: str, what: str, digits: int = 2, goal: bool = True,
                 names: tuple[str, str] = ("baseline", "hookbus")) -> float:
    """The result of a throughput benchmark: each round's baseline and hookbus
    rates (measured one after the other), their ratios, and the median ratio
    against the goal. Rounds, not one long run each, because this kind of
    machine drifts by a fifth over minutes: a baseline measured first and
    hookbus minutes later would compare the machine with itself."""
    ratios = [hook / base for base, hook in pairs]
    median = statistics.median(ratios)
    banner(f"result: {what}")
    for i, ((base, hook), ratio) in enumerate(zip(pairs, ratios, strict=True), 1):
        print(f"round {i}: {names[0]} {base:.0f} {unit}   {names[1]} {hook:.0f} {unit}   ratio {ratio:.{digits}f}")
    verdict = f"   goal >= 0.5: {'met' if median >= 0.5 else 'MISSED'}" if goal else ""
    print(f"median ratio {names[1]}/{names[0]} {median:.{digits}f} over {len(pairs)} round(s) "
          f"(range {min(ratios):.{digits}f}-{max(ratios):.{digits}f}){verdict}", flush=True)
    return median


@contextlib.contextmanager
def postgres_server(wanted: bool) -> Iterator[Any]:
    """With --postgres: a PostgreSQL server of the benchmark's own, as the tests start one
    (tests/pg.py: Debian's binaries, a cluster in a temp dir, an unprivileged user), removed
    at the end; else None."""
    if not wanted:
        yield None
        return
    from tests.pg import running_server

    with running_server() as server:
        yield server


def handle_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so cleanup code runs."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's main; Ctrl-C or SIGTERM stops it through its cleanup and exits 130."""
    handle_sigterm()
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started was stopped", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def bench_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh temp dir for one benchmark's configs, logs and journals: removed
    afterwards, or kept (and its path printed) with --keep."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SystemExit(f"bench: {program} is not installed")
    return path


# -- events --------------------------------------------------------------------

def event_dict(run: str, i: int, size: int, jobs: int = 64, **extra_data: Any) -> dict[str, Any]:
    """A backup.task.finished CloudEvent whose JSON is about `size` bytes
    (padded in data.task.output_tail); `id` is unique per (run, i)."""
    data: dict[str, Any] = {
        "job_id": f"job-{i % jobs}",
        **extra_data,
        "task": {"index": 0, "name": "Database Dump", "kind": "hook", "phase": "pre", "status": "completed",
                 "critical": True, "exit_code": 0, "duration_s": 1.25, "output_tail": ""},
    }
    event = {"specversion": "1.0", "id": f"{run}-{i}", "source": "bench://hookbus", "type": "backup.task.finished",
             "time": "2026-11-21T03:38:00Z", "subject": "MyRepository", "datacontenttype": "application/json",
             "data": data}
    pad = size - len(json.dumps(event, separators=(",", ":")))
    if pad > 0:
        data["task"]["output_tail"] = "x" * pad
    return event


def event_body(run: str, i: int, size: int, jobs: int = 64) -> bytes:
    return json.dumps(event_dict(run, i, size, jobs), separators=(",", ":")).encode()


# -- statistics ----------------------------------------------------------------

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)
