#!/usr/bin/env python3
"""scriptd vs supervisord on identical workloads, in one run, reported as ratios.

Run through `bench/compare.sh`, which builds scriptd in release mode, installs supervisor into
`bench/.venv` when missing and makes the work directory. Standard library only.

Each scenario runs the same scripts under both supervisors, alternating A B A B over several
rounds, so a noisy machine slows both sides of a round alike; every figure is the median over
the rounds with the spread (min-max) of the round values, and the ratio scriptd/supervisord
is the median of the per-round ratios (paired, so noise between rounds cancels out).

Scenarios (see BENCHMARKS.md, "scriptd vs supervisord"):
  1 control round trip: `ctl status` vs `supervisorctl status`, 10 scripts, whole process
  2 reload of one changed script out of 100: edit -> changed script runs its new command
    (scriptd's watcher; `ctl reload` with the watcher off; edit + `supervisorctl update`),
    and whether any unchanged script was restarted (pids before/after)
  3 log capture: 1,000,000 lines of 50 bytes as fast as possible until all are in the log
    file; the same program redirected straight to a file is the ceiling
  4 live follow: `ctl logs -f` vs `supervisorctl tail -f` at 1,000 lines/s for 5 s
  5 memory: daemon RSS idle with 100 scripts; CLI peak RSS
  6 a 50 MiB line without newline: daemon peak RSS and what the log holds

Everything runs on Unix sockets and files in the work directory. Every process started is
recorded (WORK/pids) and stopped by pid at the end, on an error, on SIGINT and on SIGTERM; the
driver is a child subreaper, so anything orphaned on the way is reparented to it and stopped
too.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

DEVNULL = subprocess.DEVNULL

# Scenario 3: 1,000,000 lines of exactly 50 bytes ("L0000001 " + 40 characters + "\n").
LINE_TEXT = "0123456789abcdefghijklmnopqrstuvwxyzABCD"
CAPTURE_LINES = 1_000_000
CAPTURE_FMT = "L%07.0f " + LINE_TEXT
CAPTURE_LAST = f"L{CAPTURE_LINES:07d} {LINE_TEXT}\n".encode()
# Scenario 4.
FOLLOW_RATE = 1000
FOLLOW_SECS = 5
# Scenario 6.
BIG_BYTES = 50 << 20

PACED_WRITER = r'''
import sys, time
rate, secs, tag = int(sys.argv[1]), float(sys.argv[2]), open(sys.argv[3]).read().strip()
n = int(rate * secs)
out = sys.stdout
t0 = time.time()
for i in range(n):
    d = t0 + i / rate - time.time()
    if d > 0:
        time.sleep(d)
    out.write("%s %d %.6f %s\n" % (tag, i, time.time(), "x" * 20))
    out.flush()
'''


def now() -> float:
    return time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes


def proc_stat(pid: int):
    """(ppid, starttime, state, cpu seconds) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(rest[1]), int(rest[19]), rest[0], (int(rest[11]) + int(rest[12])) / tck


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, starttime) of every descendant of root."""
    children: dict[int, list[tuple[int, int]]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            st = proc_stat(int(e))
            if st:
                children.setdefault(st[0], []).append((int(e), st[1]))
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c[0])
    return out


def kill_if_same(pid: int, start: int, sig: int) -> None:
    """Signals pid only if it is still the process that started at `start`."""
    st = proc_stat(pid)
    if st and st[1] == start and st[2] != "Z":
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss")


class Procs:
    """Every process the driver starts: its own process group, its pid logged to WORK/pids."""

    def __init__(self, work: Path, env: dict):
        self.work = work
        self.env = env
        self.live: list[subprocess.Popen] = []
        self.pidlog = open(work / "pids", "a")

    def spawn(self, argv, *, stdout=DEVNULL, stderr=DEVNULL, env=None) -> subprocess.Popen:
        p = subprocess.Popen(
            [str(a) for a in argv],
            stdin=DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env or self.env,
            cwd=self.work,
            start_new_session=True,
        )
        self.live.append(p)
        self.pidlog.write(f"{p.pid}\n")
        self.pidlog.flush()
        return p

    def stop(self, p: subprocess.Popen, grace: float = 15.0) -> None:
        """SIGTERM to the pid (a daemon stops its scripts), SIGKILL to its group and to every
        descendant seen before, if it is not gone within `grace`."""
        if p.poll() is None:
            tree = descendants(p.pid)
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            for pid, start in tree:
                kill_if_same(pid, start, signal.SIGKILL)
        for s in (p.stdout, p.stderr):
            if s:
                s.close()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self, grace: float = 5.0) -> None:
        """Everything at once: SIGTERM to every live process, SIGKILL to its group and to every
        descendant seen before if it is not gone within `grace`."""
        trees = {p.pid: descendants(p.pid) for p in self.live if p.poll() is None}
        for p in self.live:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = now() + grace
        for p in self.live:
            try:
                p.wait(max(0.0, deadline - now()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for tree in trees.values():
            for pid, start in tree:
                kill_if_same(pid, start, signal.SIGKILL)
        self.live.clear()
        # Orphans reparented to us (we are a child subreaper).
        for pid, start in descendants(os.getpid()):
            kill_if_same(pid, start, signal.SIGKILL)
        deadline = now() + 5
        while now() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)

    def timed(self, argv, timeout: float = 60.0, check: bool = True) -> tuple[float, int]:
        """Wall time in seconds of a whole CLI process, and its exit code."""
        argv = [str(a) for a in argv]
        t0 = now()
        p = subprocess.Popen(
            argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, env=self.env, cwd=self.work,
            start_new_session=True,
        )
        self.live.append(p)
        timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, _ = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        dt = now() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        self.live.remove(p)
        if check and p.returncode != 0:
            r = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
            raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}: {r.stdout}{r.stderr}")
        return dt, p.returncode

    def output(self, argv, timeout: float = 60.0, check: bool = True) -> str:
        argv = [str(a) for a in argv]
        p = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=timeout)
        finally:
            self.stop(p)
        if check and p.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}: {out.decode(errors='replace')}")
        return out.decode(errors="replace")

    def peak_rss_kib(self, argv, timeout: float = 60.0) -> int:
        """Peak RSS of a CLI process. The kernel charges the RSS of the image a process had
        before exec to its ru_maxrss, so the CLI is forked by a small /bin/sh, not by this
        Python; the orphan is reparented to us (subreaper) and reaped with wait4."""
        cmd = shlex.join([str(a) for a in argv]) + " </dev/null >/dev/null 2>&1 & echo $!"
        r = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=self.env,
                           cwd=self.work, timeout=timeout)
        pid = int(r.stdout.strip())
        self.pidlog.write(f"{pid}\n")
        self.pidlog.flush()
        _, status, ru = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{shlex.join(map(str, argv))} failed")
        return ru.ru_maxrss


def wait_for(pred, timeout: float, what: str, step: float = 0.001):
    end = now() + timeout
    while True:
        v = pred()
        if v:
            return v
        if now() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def tail_has(path: Path, offset: int, needle: bytes) -> bool:
    """Whether the last 4 KiB of `path` written after `offset` contain `needle`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size <= offset:
            return False
        start = max(offset, size - 4096)
        return needle in os.pread(fd, size - start, start)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# the two supervisors


@dataclass
class Spec:
    """One script, the same for both supervisors."""

    argv: list
    autostart: bool = True  # False: a one-shot the harness starts (`ctl run` / `supervisorctl start`)
    big_log: bool = False  # no rotation (the capture scenario); otherwise both supervisors' defaults


class Scriptd:
    label = "scriptd"

    def __init__(self, ctx: "Ctx", tag: str, specs: dict, watch: bool = True):
        self.ctx, self.tag, self.watch = ctx, tag, watch
        self.dir = ctx.work / tag
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.cfg = self.dir / "scriptd.yaml"
        self.sock = self.dir / "run" / "s.sock"
        self.proc = None
        self.write(specs)

    def text(self, specs: dict) -> str:
        q = json.dumps  # a JSON string is a YAML double-quoted scalar
        out = ["daemon:", "  socket: run/s.sock", "  state_dir: state", "  log_dir: logs"]
        if not self.watch:
            out.append("  watch: false")
        out.append("scripts:")
        for name, s in specs.items():
            out.append(f"  {name}:")
            out.append(f"    command: [{', '.join(q(str(a)) for a in s.argv)}]")
            if not s.autostart:
                out += ["    interval: 24h", "    enabled: false"]
            if s.big_log:
                out.append("    log: { max_bytes: 4GiB, keep: 1 }")
        return "\n".join(out) + "\n"

    def write(self, specs: dict) -> None:
        atomic_write(self.cfg, self.text(specs))

    def start(self) -> None:
        err = open(self.dir / "daemon.log", "ab")
        self.proc = self.ctx.procs.spawn([self.ctx.bins / "scriptd", "--config", self.cfg],
                                         stdout=err, stderr=err)
        err.close()

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"scriptd exited {self.proc.returncode}; see {self.dir}/daemon.log")
            return self.sock.exists() and self.ctx.procs.timed(self.ctl("status"), check=False)[1] == 0

        wait_for(up, 30, "scriptd to listen", step=0.01)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, grace: float = 15.0) -> None:
        if self.proc:
            self.ctx.procs.stop(self.proc, grace)

    def ctl(self, *args) -> list:
        return [self.ctx.bins / "ctl", "--socket", self.sock, *args]

    def states(self) -> dict:
        """name -> (state, pid)"""
        doc = json.loads(self.ctx.procs.output(self.ctl("--output", "json", "status")))
        return {s["name"]: (s["state"], s["pid"]) for s in doc["scripts"]}

    def wait_running(self, names, timeout: float = 60.0) -> None:
        def ok():
            st = self.states()
            return all(st.get(n, ("", None))[0] == "running" and st[n][1] for n in names)

        wait_for(ok, timeout, f"{len(names)} scripts running under scriptd", step=0.1)

    def run_oneshot(self, name: str) -> None:
        self.ctx.procs.output(self.ctl("run", name))

    def oneshot_done(self, name: str) -> bool:
        return self.states()[name][0] != "running"

    def log_files(self, name: str) -> list[Path]:
        cur = self.dir / "logs" / f"{name}.log"
        rotated = []
        i = 1
        while Path(f"{cur}.{i}").exists():
            rotated.append(Path(f"{cur}.{i}"))
            i += 1
        return list(reversed(rotated)) + ([cur] if cur.exists() else [])

    def follow_argv(self, name: str) -> list:
        return self.ctl("logs", name, "-f", "-n", "0", "--raw")

    def helpers(self) -> list[int]:
        """The shims (one per running script) that hold each script's process group."""
        out = []
        for pid, _ in descendants(self.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(cmd) > 1 and cmd[1] == b"__shim":
                out.append(pid)
        return out


class Supervisord:
    label = "supervisord"

    def __init__(self, ctx: "Ctx", tag: str, specs: dict):
        self.ctx, self.tag = ctx, tag
        self.dir = ctx.work / tag
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.cfg = self.dir / "supervisord.conf"
        self.proc = None
        self.write(specs)

    def text(self, specs: dict) -> str:
        d = self.dir

        def esc(s: str) -> str:
            # supervisor expands %(name)s and takes " ;" / " #" as the start of a comment.
            assert " ;" not in s and " #" not in s, s
            return s.replace("%", "%%")

        out = [
            "[unix_http_server]", f"file={d}/s.sock", "",
            "[supervisord]", f"logfile={d}/supervisord.log", f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}/logs", "nodaemon=true", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{d}/s.sock", "",
        ]
        for name, s in specs.items():
            out += [
                f"[program:{name}]",
                f"command={esc(shlex.join(str(a) for a in s.argv))}",
                f"directory={d}",
                "redirect_stderr=true",
                f"stdout_logfile={d}/logs/{name}.log",
            ]
            if not s.autostart:
                out += ["autostart=false", "autorestart=false", "startsecs=0"]
            if s.big_log:
                out += ["stdout_logfile_maxbytes=0"]
            out.append("")
            # `supervisorctl tail -f` refuses a log file that does not exist yet.
            (d / "logs" / f"{name}.log").touch()
        return "\n".join(out)

    def write(self, specs: dict) -> None:
        atomic_write(self.cfg, self.text(specs))

    def start(self) -> None:
        self.proc = self.ctx.procs.spawn([self.ctx.venv / "bin" / "supervisord", "-c", self.cfg])

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisord exited {self.proc.returncode}; see {self.dir}/supervisord.log")
            return (self.dir / "s.sock").exists() and self.ctx.procs.timed(self.ctl("pid"), check=False)[1] == 0

        wait_for(up, 30, "supervisord to listen", step=0.01)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, grace: float = 15.0) -> None:
        if self.proc:
            self.ctx.procs.stop(self.proc, grace)

    def ctl(self, *args) -> list:
        return [self.ctx.venv / "bin" / "supervisorctl", "-c", self.cfg, *args]

    def states(self) -> dict:
        out = self.ctx.procs.output(self.ctl("status"), check=False)
        res = {}
        for line in out.splitlines():
            m = re.match(r"^(\S+)\s+([A-Z]+)\s*(?:pid (\d+),)?", line)
            if m:
                state = {"RUNNING": "running", "STARTING": "starting"}.get(m[2], m[2].lower())
                res[m[1]] = (state, int(m[3]) if m[3] else None)
        return res

    def wait_running(self, names, timeout: float = 60.0) -> None:
        def ok():
            st = self.states()
            return all(st.get(n, ("", None))[0] == "running" for n in names)

        wait_for(ok, timeout, f"{len(names)} programs running under supervisord", step=0.2)

    def run_oneshot(self, name: str) -> None:
        out = self.ctx.procs.output(self.ctl("start", name), check=False)
        if "started" not in out and "ERROR (already started)" not in out:
            raise RuntimeError(f"supervisorctl start {name}: {out}")

    def oneshot_done(self, name: str) -> bool:
        return self.states()[name][0] in ("exited", "stopped", "fatal", "backoff")

    def log_files(self, name: str) -> list[Path]:
        cur = self.dir / "logs" / f"{name}.log"
        rotated = []
        i = 1
        while Path(f"{cur}.{i}").exists():
            rotated.append(Path(f"{cur}.{i}"))
            i += 1
        return list(reversed(rotated)) + ([cur] if cur.exists() else [])

    def follow_argv(self, name: str) -> list:
        return self.ctl("tail", "-f", name)

    def helpers(self) -> list[int]:
        return []


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Row:
    scenario: str
    metric: str
    unit: str  # ms | s | lines/s | MB | count | lines
    better: str  # lower | higher | same
    values: dict = field(default_factory=dict)  # label -> per-round values
    paired: bool = True  # False: no ratio (a denominator near zero makes it meaningless)

    def add(self, label: str, v: float) -> None:
        self.values.setdefault(label, []).append(v)


def fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "lines/s":
        return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.0f} k/s"
    if unit == "MB":
        return f"{v:.1f} MB"
    if unit == "KB":
        return f"{v:.0f} KB"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def cell(vs: list, unit: str) -> str:
    if not vs:
        return "—"
    m = statistics.median(vs)
    if len(vs) == 1 or min(vs) == max(vs):
        return fmt(m, unit)
    return f"{fmt(m, unit)} ({fmt(min(vs), unit)}–{fmt(max(vs), unit)})"


def ratio(a: list, b: list) -> float | None:
    rs = [x / y for x, y in zip(a, b) if y]
    return statistics.median(rs) if rs else None


def table(rows: list[Row]) -> str:
    out = [
        "| # | scenario · metric | scriptd | supervisord | scriptd/supervisord | better |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        a, b = r.values.get("scriptd", []), r.values.get("supervisord", [])
        rt = ratio(a, b) if r.paired else None
        rts = "—" if rt is None else f"{rt:.3f}" if rt < 0.1 else f"{rt:.2f}" if rt < 10 else f"{rt:.0f}"
        if rt is None and a and b:
            ma, mb = statistics.median(a), statistics.median(b)
            good = ma < mb if r.better == "lower" else ma > mb
            win = "tie" if ma == mb else ("scriptd" if good else "**supervisord**")
        elif rt is None or r.better == "same":
            win = "—" if rt is None else ("tie" if abs(rt - 1) < 0.05 else "")
        else:
            good = rt < 1 if r.better == "lower" else rt > 1
            win = "tie" if abs(rt - 1) < 0.05 else ("scriptd" if good else "**supervisord**")
        out.append(f"| {r.scenario} | {r.metric} | {cell(a, r.unit)} | {cell(b, r.unit)} | {rts} | {win} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# scenarios


class Ctx:
    def __init__(self, args, env: dict):
        self.root = Path(args.root).resolve()
        self.bins = Path(args.bin).resolve()
        self.venv = Path(args.venv).resolve()
        self.work = Path(args.work).resolve()
        self.rounds = args.rounds
        self.env = env
        self.procs = Procs(self.work, env)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        bindir = self.work / "bin"
        bindir.mkdir(exist_ok=True)
        # The scripts' sleep carries the work directory in its argv, so compare.sh can find and
        # stop every process of this run by pid even after a `kill -9` of this driver.
        self.sleep = bindir / "sleep"
        if not self.sleep.exists():
            os.symlink("/bin/sleep", self.sleep)
        self.paced = bindir / "paced.py"
        self.paced.write_text(PACED_WRITER)
        self.python = Path(sys.executable).resolve()

    def rounds_for(self, scenario: str) -> int:
        """--rounds, or by default 5 rounds for the short scenarios and 3 for the long ones."""
        if self.rounds:
            return self.rounds
        return 5 if scenario in ("1", "2", "3") else 3

    def row(self, scenario: str, metric: str, unit: str, better: str) -> Row:
        r = Row(scenario, metric, unit, better)
        self.rows.append(r)
        return r


def s1_status(ctx: Ctx) -> None:
    """Wall time of a whole `ctl status` / `supervisorctl status` process, 10 scripts."""
    names = [f"s{i}" for i in range(10)]
    specs = {n: Spec([ctx.sleep, "100000"]) for n in names}
    a, b = Scriptd(ctx, "s1-scriptd", specs), Supervisord(ctx, "s1-supervisord", specs)
    a.start()
    b.start()
    a.wait_running(names)
    b.wait_running(names)
    per_round = 20
    row = ctx.row("1", f"control round trip: `status`, 10 scripts, whole CLI process (median of {per_round} per round)", "ms", "lower")
    allv: dict[str, list] = {}
    for d in (a, b):
        for _ in range(3):
            ctx.procs.timed(d.ctl("status"))
    for r in range(ctx.rounds_for("1")):
        for d in (a, b):
            xs = [ctx.procs.timed(d.ctl("status"))[0] * 1e3 for _ in range(per_round)]
            allv.setdefault(d.label, []).extend(xs)
            row.add(d.label, statistics.median(xs))
    p90 = ctx.row("1", "control round trip: p90 over all runs", "ms", "lower")
    for label, xs in allv.items():
        xs.sort()
        p90.add(label, xs[int(round(0.9 * (len(xs) - 1)))])
    a.stop()
    b.stop()


def s2_reload(ctx: Ctx) -> None:
    """One changed script out of 100: from the edit until it runs its new command."""
    others = [f"s{i:02d}" for i in range(1, 100)]

    def specs(tag: str, gen: int) -> dict:
        marker = ctx.work / f"{tag}.marker"
        d = {"changed": Spec(["/bin/sh", "-c", f"echo {gen} > {marker} && exec {ctx.sleep} 100000"])}
        d.update({n: Spec([ctx.sleep, "100000"]) for n in others})
        return d

    w = Scriptd(ctx, "s2-scriptd-watch", specs("s2-scriptd-watch", 0), watch=True)
    c = Scriptd(ctx, "s2-scriptd-ctl", specs("s2-scriptd-ctl", 0), watch=False)
    s = Supervisord(ctx, "s2-supervisord", specs("s2-supervisord", 0))
    for d in (w, c, s):
        d.start()
    for d in (w, c, s):
        d.wait_running(others + ["changed"])
    row_w = ctx.row("2", "reload, 1 of 100 changed: edit → new command runs (scriptd: watcher, debounce 50 ms default; supervisord: edit + `supervisorctl update`)", "ms", "lower")
    row_c = ctx.row("2", "reload, 1 of 100 changed: edit + `ctl reload` (watcher off) → new command runs (supervisord: edit + `supervisorctl update`)", "ms", "lower")
    row_cli = ctx.row("2", "reload: the reload CLI's own wall time (`ctl reload` vs `supervisorctl update`)", "ms", "lower")
    row_u = ctx.row("2", "reload: unchanged scripts restarted (of 99, summed over rounds)", "count", "lower")
    restarted = {"w": 0, "c": 0, "s": 0}
    for r in range(ctx.rounds_for("2")):
        gen = r + 1
        for key, d in (("w", w), ("c", c), ("s", s)):
            before = d.states()
            marker = ctx.work / f"{d.tag}.marker"
            text = d.text(specs(d.tag, gen))
            want = f"{gen}\n"
            cli = None
            t0 = now()
            atomic_write(d.cfg, text)
            if key == "c":
                cli = ctx.procs.spawn(d.ctl("reload"))
            elif key == "s":
                cli = ctx.procs.spawn(d.ctl("update"))
            wait_for(lambda: read_or_empty(marker) == want, 30, f"{d.tag} to run generation {gen}")
            dt = (now() - t0) * 1e3
            if cli:
                cli.wait(60)
                if cli.returncode != 0:
                    raise RuntimeError(f"{d.tag}: reload command exited {cli.returncode}")
                ctx.procs.live.remove(cli)
            if key == "w":
                row_w.add("scriptd", dt)
            elif key == "c":
                row_c.add("scriptd", dt)
            else:
                row_w.add("supervisord", dt)
                row_c.add("supervisord", dt)
            time.sleep(0.3)
            d.wait_running(others + ["changed"])
            after = d.states()
            n = sum(1 for o in others if before[o][1] != after[o][1])
            restarted[key] += n
            if before["changed"][1] == after["changed"][1]:
                raise RuntimeError(f"{d.tag}: the changed script kept its pid")
    # The reload CLI's own wall time, measured in rounds of their own.
    for r in range(ctx.rounds_for("2")):
        gen = 1000 + r
        for key, d in (("c", c), ("s", s)):
            marker = ctx.work / f"{d.tag}.marker"
            atomic_write(d.cfg, d.text(specs(d.tag, gen)))
            dt, _ = ctx.procs.timed(d.ctl("reload" if key == "c" else "update"))
            wait_for(lambda: read_or_empty(marker) == f"{gen}\n", 30, f"{d.tag} generation {gen}")
            row_cli.add(d.label, dt * 1e3)
            time.sleep(0.3)
            d.wait_running(others + ["changed"])
    row_u.values = {"scriptd": [restarted["w"] + restarted["c"]], "supervisord": [restarted["s"]]}
    ctx.notes.append(
        f"2: unchanged scripts restarted over {ctx.rounds_for('2')} rounds: scriptd watcher {restarted['w']}, "
        f"`ctl reload` {restarted['c']}, supervisord {restarted['s']} (pids of the 99 others compared "
        "before and after each reload)."
    )
    for d in (w, c, s):
        d.stop(grace=3.0)  # supervisord takes ~15 s to stop 100 programs (scenario 5)


def cpu_s(pid: int) -> float:
    st = proc_stat(pid)
    return st[3] if st else 0.0


def s3_capture(ctx: Ctx) -> None:
    """1,000,000 lines of 50 bytes, as fast as possible, until all are in the log file."""

    def writer(tag: str) -> list:
        start = ctx.work / f"{tag}.start"
        return ["/bin/sh", "-c",
                f"date +%s.%N > {start} && exec seq -f '{CAPTURE_FMT}' 1 {CAPTURE_LINES}"]

    a = Scriptd(ctx, "s3-scriptd", {"cap": Spec(writer("s3-scriptd"), autostart=False, big_log=True)})
    b = Supervisord(ctx, "s3-supervisord", {"cap": Spec(writer("s3-supervisord"), autostart=False, big_log=True)})
    a.start()
    b.start()
    row = ctx.row("3", "log capture: 1,000,000 lines × 50 B, first byte written → all in the log file", "lines/s", "higher")
    cpu = ctx.row("3", "log capture: daemon CPU time for the 1,000,000 lines", "s", "lower")
    lost = ctx.row("3", "log capture: lines missing from the log (summed over rounds)", "count", "lower")
    ceiling, frac = [], {"scriptd": [], "supervisord": []}
    missing = {"scriptd": 0, "supervisord": 0}
    for r in range(ctx.rounds_for("3")):
        # ceiling: the same program, redirected straight to a file
        tag = "s3-ceiling"
        out = ctx.work / f"{tag}.out"
        with open(out, "wb") as f:
            p = ctx.procs.spawn(writer(tag), stdout=f)
            p.wait(120)
            t_end = time.time()
            ctx.procs.live.remove(p)
        t_start = float((ctx.work / f"{tag}.start").read_text())
        n = out.read_bytes().count(b"\n")
        if n != CAPTURE_LINES:
            raise RuntimeError(f"ceiling wrote {n} lines")
        ceiling.append(CAPTURE_LINES / (t_end - t_start))
        for d in (a, b):
            logf = d.dir / "logs" / "cap.log"
            startf = ctx.work / f"{d.tag}.start"
            startf.unlink(missing_ok=True)
            off = file_size(logf)
            c0 = cpu_s(d.pid)
            d.run_oneshot("cap")
            wait_for(lambda: tail_has(logf, off, CAPTURE_LAST), 300, f"{d.label} to log 1,000,000 lines", step=0.002)
            t_end = time.time()
            c1 = cpu_s(d.pid)
            t_start = float(wait_for(lambda: read_or_empty(startf).strip(), 10, "start stamp"))
            rate = CAPTURE_LINES / (t_end - t_start)
            row.add(d.label, rate)
            cpu.add(d.label, c1 - c0)
            frac[d.label].append(rate / ceiling[-1])
            wait_for(lambda: d.oneshot_done("cap"), 60, f"{d.label} capture run to end", step=0.05)
            with open(logf, "rb") as f:
                f.seek(off)
                data = f.read()
            got = data.count(b" out L") if d.label == "scriptd" else data.count(b"\n")
            missing[d.label] += CAPTURE_LINES - got
    lost.values = {k: [v] for k, v in missing.items()}
    row.metric += f" (ceiling, the writer > file: {fmt(statistics.median(ceiling), 'lines/s')})"
    ctx.notes.append(
        "3: share of the ceiling (the same `seq` redirected to a file, "
        f"{fmt(statistics.median(ceiling), 'lines/s')}): scriptd {statistics.median(frac['scriptd']):.0%}, "
        f"supervisord {statistics.median(frac['supervisord']):.0%}."
    )
    a.stop()
    b.stop()


def s4_follow(ctx: Ctx) -> None:
    """`ctl logs -f` vs `supervisorctl tail -f` while a script writes 1,000 lines/s for 5 s."""
    n_lines = FOLLOW_RATE * FOLLOW_SECS

    def spec(tag: str) -> Spec:
        return Spec([ctx.python, ctx.paced, str(FOLLOW_RATE), str(FOLLOW_SECS), ctx.work / f"{tag}.tag"],
                    autostart=False)

    a = Scriptd(ctx, "s4-scriptd", {"follow": spec("s4-scriptd")})
    b = Supervisord(ctx, "s4-supervisord", {"follow": spec("s4-supervisord")})
    a.start()
    b.start()
    seen_row = ctx.row("4", f"live follow, {FOLLOW_RATE} lines/s for {FOLLOW_SECS} s: lines seen (of {n_lines})", "lines", "higher")
    med_row = ctx.row("4", "live follow: delay written → seen by the follower, median", "ms", "lower")
    p99_row = ctx.row("4", "live follow: delay, p99", "ms", "lower")
    for r in range(ctx.rounds_for("4")):
        for d in (a, b):
            tag = f"r{r}{d.label}"
            (ctx.work / f"{d.tag}.tag").write_text(tag + "\n")
            follower = ctx.procs.spawn(d.follow_argv("follow"), stdout=subprocess.PIPE)
            got: list[tuple[float, bytes]] = []

            def reader(p=follower, got=got):
                for line in iter(p.stdout.readline, b""):
                    got.append((time.time(), line))

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            time.sleep(1.0)  # let the follower attach
            if follower.poll() is not None:
                raise RuntimeError(f"{d.label} follower exited {follower.returncode}")
            d.run_oneshot("follow")
            last = f"{tag} {n_lines - 1} ".encode()
            try:
                wait_for(lambda: any(l.startswith(last) for _, l in got[-50:]), FOLLOW_SECS + 10,
                         "the last line", step=0.05)
            except TimeoutError:
                pass
            time.sleep(0.2)
            ctx.procs.stop(follower)
            th.join(5)
            seqs, delays = set(), []
            prefix = (tag + " ").encode()
            for t, line in got:
                if not line.startswith(prefix):
                    continue
                parts = line.split()
                try:
                    seq, ts = int(parts[1]), float(parts[2])
                except (IndexError, ValueError):
                    continue
                if seq not in seqs:
                    seqs.add(seq)
                    delays.append((t - ts) * 1e3)
            delays.sort()
            seen_row.add(d.label, len(seqs))
            if delays:
                med_row.add(d.label, statistics.median(delays))
                p99_row.add(d.label, delays[int(round(0.99 * (len(delays) - 1)))])
            wait_for(lambda: d.oneshot_done("follow"), 30, f"{d.label} writer to end", step=0.05)
    a.stop()
    b.stop()


def s5_memory(ctx: Ctx) -> None:
    """Daemon RSS idle with 100 scripts configured; peak RSS of the status CLI."""
    names = [f"s{i:03d}" for i in range(100)]
    specs = {n: Spec([ctx.sleep, "100000"]) for n in names}
    rss = ctx.row("5", "memory: daemon RSS, idle, 100 scripts running", "MB", "lower")
    pss = ctx.row("5", "memory: daemon + its helper processes (scriptd: 100 shims), PSS", "MB", "lower")
    cli = ctx.row("5", "memory: CLI peak RSS, `status` with 100 scripts", "MB", "lower")
    stop = ctx.row("5", "(also) shutdown: SIGTERM → daemon exited, its 100 scripts stopped (first round only)", "s", "lower")
    floor = ctx.procs.peak_rss_kib(["/bin/true"])
    for r in range(ctx.rounds_for("5")):
        for cls in (Scriptd, Supervisord):
            d = cls(ctx, f"s5-{cls.label}-{r}", specs)
            d.start()
            d.wait_running(names)
            time.sleep(2.0)
            rss.add(d.label, status_kib(d.pid, "VmRSS") / 1024)
            pss.add(d.label, (pss_kib(d.pid) + sum(pss_kib(h) for h in d.helpers())) / 1024)
            cli.add(d.label, max(ctx.procs.peak_rss_kib(d.ctl("status")) for _ in range(3)) / 1024)
            if r == 0:
                t0 = now()
                d.stop(grace=60.0)
                stop.add(d.label, now() - t0)
            else:
                d.stop(grace=3.0)
    ctx.notes.append(
        f"5: CLI peak RSS is ru_maxrss of the CLI forked by /bin/sh (which counts the "
        f"forking shell's pages too: /bin/true measures {floor / 1024:.1f} MB this way)."
    )


def s6_long_line(ctx: Ctx) -> None:
    """A 50 MiB line without newline: daemon peak RSS and what the log holds (default log settings)."""

    def spec(tag: str) -> Spec:
        done = ctx.work / f"{tag}.done"
        return Spec(["/bin/sh", "-c", f"head -c {BIG_BYTES} /dev/zero | tr '\\0' x && touch {done}"],
                    autostart=False)

    peak = ctx.row("6", "50 MiB line without newline: daemon peak RSS (VmHWM)", "MB", "lower")
    growth = ctx.row("6", "50 MiB line: daemon peak RSS minus idle RSS before the run", "MB", "lower")
    growth.paired = False
    kept = ctx.row("6", "50 MiB line: MB of the line kept in the log files (default rotation)", "MB", "higher")
    took = ctx.row("6", "50 MiB line: run start → log complete", "s", "lower")
    what = {}
    for r in range(ctx.rounds_for("6")):
        for cls in (Scriptd, Supervisord):
            tag = f"s6-{cls.label}-{r}"
            d = cls(ctx, tag, {"big": spec(tag)})
            d.start()
            time.sleep(0.5)
            idle = status_kib(d.pid, "VmRSS")
            done = ctx.work / f"{tag}.done"
            t0 = now()
            d.run_oneshot("big")
            wait_for(done.exists, 120, f"{d.label} 50 MiB writer", step=0.01)
            wait_for(lambda: d.oneshot_done("big"), 120, f"{d.label} run to end", step=0.05)
            # until the files stop growing for 0.5 s
            last, stable_since = -1, now()
            while now() - stable_since < 0.5:
                size = sum(file_size(f) for f in d.log_files("big"))
                if size != last:
                    last, stable_since, t_done = size, now(), now()
                time.sleep(0.02)
            hwm = status_kib(d.pid, "VmHWM")
            peak.add(d.label, hwm / 1024)
            growth.add(d.label, round((hwm - idle) / 1024, 1))
            took.add(d.label, t_done - t0)
            files = d.log_files("big")
            xs, records, longest = 0, 0, 0
            for f in files:
                with open(f, "rb") as fh:
                    for line in fh:
                        if d.label == "scriptd":
                            parts = line.rstrip(b"\n").split(b" ", 4)
                            # `out+`: a piece of an over-long line that goes on in the next record
                            if len(parts) < 5 or parts[3] not in (b"out", b"out+"):
                                continue
                            text = parts[4]
                        else:
                            text = line.rstrip(b"\n")
                        records += 1
                        xs += text.count(b"x")
                        longest = max(longest, len(text))
            kept.add(d.label, xs / 1e6)
            what[d.label] = (
                f"{xs:,} of {BIG_BYTES:,} bytes in {records:,} record(s) of at most {longest:,} bytes "
                f"over {len(files)} file(s)"
            )
            d.stop()
    ctx.notes.append(
        "6: what the log holds after the last round — scriptd: " + what["scriptd"]
        + "; supervisord: " + what["supervisord"] + "."
    )


SCENARIOS = {"1": s1_status, "2": s2_reload, "3": s3_capture, "4": s4_follow, "5": s5_memory, "6": s6_long_line}


def machine() -> str:
    model = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1048576:.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}{mem}, Linux {platform.release()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="the repository (for the commit id)")
    ap.add_argument("--bin", default="target/release", help="directory of scriptd and ctl")
    ap.add_argument("--venv", default="bench/.venv", help="virtualenv with supervisor installed")
    ap.add_argument("--work", required=True, help="an empty temp directory for sockets, configs and logs")
    ap.add_argument("--rounds", type=int, default=0,
                    help="rounds per scenario, A B A B ... (default: 5 for scenarios 1-3, 3 for 4-6)")
    ap.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated scenario numbers")
    ap.add_argument("--profile", default="release", help="the cargo profile of --bin (for the report)")
    ap.add_argument("--markdown", help="also write the report to this file")
    ap.add_argument("--json", help="also write every round's values to this file")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # Child subreaper: orphans of what we start are reparented to us, so we can stop them.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SCRIPTD_")) and k not in ("VIRTUAL_ENV",)}
    env.update({"LC_ALL": "C", "NO_COLOR": "1"})
    ctx = Ctx(args, env)
    started = now()
    try:
        for key in args.only.split(","):
            key = key.strip()
            t = now()
            log(f"scenario {key}: {SCENARIOS[key].__doc__.strip().splitlines()[0]}")
            SCENARIOS[key](ctx)
            log(f"scenario {key} done in {now() - t:.0f} s")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ctx.procs.stop_all()

    try:
        commit = subprocess.run(["git", "-C", str(ctx.root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    sv = subprocess.run([ctx.venv / "bin" / "python", "-c", "import supervisor.options as o; print(o.VERSION)"],
                        capture_output=True, text=True).stdout.strip()
    rounds_text = ", ".join(f"{k}: {ctx.rounds_for(k)}" for k in args.only.split(","))
    report = "\n".join([
        f"machine: {machine()}",
        f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} · "
        f"commit {commit} · cargo profile {args.profile} · supervisor {sv} (Python {platform.python_version()}) · "
        f"rounds per scenario: {rounds_text} (A B A B) · scenarios {args.only} · {now() - started:.0f} s",
        "",
        "Each cell: median over the rounds (min–max of the round values). Ratio: median of the "
        "per-round ratios scriptd/supervisord.",
        "",
        table(ctx.rows),
        "",
        *[f"- {n}" for n in ctx.notes],
    ])
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"scenario": r.scenario, "metric": r.metric, "unit": r.unit, "values": r.values} for r in ctx.rows],
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
