"""A real single-node SLURM cluster for the test suite, started from Debian's packages.

The cluster is SLURM 22.05 from Debian 12 (``slurm-wlm``), with ``munge`` for authentication
and ``slurmdbd`` + a private ``mariadbd`` for accounting (``sacct``, which submitit polls for
job states). Every daemon is started directly as a process (no systemd), with its pid
recorded, so that teardown stops exactly the daemons this module started and nothing else.

Library use (what ``tests/conftest.py`` does)::

    from support import local_slurm

    avail = local_slurm.probe()            # .mode: "running" | "startable" | "unavailable"
    handle = local_slurm.start(session=True)   # idempotent: no-op when a cluster answers
    ...                                    # handle.partition, handle.node, handle.env, ...
    local_slurm.stop(handle)               # stops only the daemons *this* start() launched

``session=True`` registers the test session (pid + start time) as a user of a cluster this
module started, so that two pytest sessions on one machine do not pull the cluster from
under each other: the starter leaves it running while another session still uses it, and the
last session to finish stops it. A cluster started by the CLI is never stopped by a session.

Command line (for developers; run as root)::

    python tests/support/local_slurm.py start    # install if needed, start, wait for idle node
    python tests/support/local_slurm.py status   # JSON: probe result, recorded daemons, sinfo
    python tests/support/local_slurm.py stop     # stop the daemons recorded in the state file

Everything lives under ``/tmp/ssl-bench-slurm`` (override with ``SSL_BENCH_SLURM_DIR``):
``log/`` (one log per daemon), ``state.json`` (daemons started, by pid and start time),
``var/`` (mariadb data dir, slurmctld state, slurmd spool; kept between runs so that job ids
keep increasing and never collide with old accounting records).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BASE = Path(os.environ.get("SSL_BENCH_SLURM_DIR", "/tmp/ssl-bench-slurm"))
STATE_FILE = BASE / "state.json"
LOCK_FILE = BASE.with_name(BASE.name + ".lock")
LOG_DIR = BASE / "log"
VAR_DIR = BASE / "var"
RUN_DIR = BASE / "run"

CLUSTER_NAME = "sslbench"
PARTITION = "debug"
PACKAGES = ["slurm-wlm", "munge", "slurmdbd", "mariadb-server"]
# binary -> package providing it (all must be present to start a cluster)
BINARIES = {
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
    "sinfo": "slurm-wlm",
    "scontrol": "slurm-wlm",
    "sacct": "slurm-wlm",
    "sacctmgr": "slurm-wlm",
    "slurmdbd": "slurmdbd",
    "munged": "munge",
    "munge": "munge",
    "unmunge": "munge",
    "mariadbd": "mariadb-server",
    "mariadb": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
}
MARKER = "# Written by ssl-bench tests/support/local_slurm.py; rewritten on every start."
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
DB_PASS = "ssl-bench-slurm"  # the database only listens on 127.0.0.1
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# stop order (reverse start order)
DAEMON_ORDER = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]


class SlurmUnavailable(RuntimeError):
    """No cluster can be had on this machine (the message says why): skip, don't fail."""


class SlurmStartError(RuntimeError):
    """Starting the cluster was attempted and failed (the message carries the daemon logs)."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH)


def _run(
    argv: list[str], *, env: dict | None = None, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess:
    exe = _which(argv[0]) or argv[0]
    return subprocess.run(
        [exe, *argv[1:]],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _ok(argv: list[str], **kw) -> bool:
    try:
        return _run(argv, **kw).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"  <cannot read {path}: {e}>"
    return "\n".join("  " + line for line in lines[-n:]) or "  <empty>"


def _log_tails(names: list[str] | None = None) -> str:
    out = []
    files = sorted(LOG_DIR.glob("*")) if LOG_DIR.is_dir() else []
    for f in files:
        if names is None or any(f.name.startswith(n) for n in names):
            out.append(f"--- {f} (tail) ---\n{_tail(f)}")
    return "\n".join(out) or f"(no logs under {LOG_DIR})"


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


SLURM_PORTS = {6817: "slurmctld", 6818: "slurmd", 6819: "slurmdbd"}  # SLURM's defaults


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise start/stop between processes (e.g. two pytest sessions, or the CLI)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# processes: identified by (pid, start time) so a recycled pid is never signalled
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Daemon:
    name: str
    pid: int
    starttime: int  # field 22 of /proc/<pid>/stat (clock ticks after boot)
    argv: list[str]
    log: str

    def alive(self) -> bool:
        st = _proc_stat(self.pid)
        return st is not None and st[1] == self.starttime and st[0] != "Z"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[19])


# Popen objects of daemons started by this process, so that they can be reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def _spawn(name: str, argv: list[str], *, env: dict, user: str | None = None) -> Daemon:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}.out"
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            start_new_session=True,  # survives the caller (the CLI exits, daemons stay)
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    _CHILDREN[proc.pid] = proc
    st = _proc_stat(proc.pid)
    return Daemon(name, proc.pid, st[1] if st else -1, argv, str(log))


def _terminate(daemons: list[Daemon], timeout: float = 20.0) -> list[str]:
    """SIGTERM (then SIGKILL) each still-alive daemon, in reverse start order; returns a report."""
    report = []
    order = {n: i for i, n in enumerate(DAEMON_ORDER)}
    for d in sorted(daemons, key=lambda d: -order.get(d.name, -1)):
        if not d.alive():
            _reap(d.pid)
            report.append(f"{d.name} (pid {d.pid}) was not running")
            continue
        os.kill(d.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(d.pid)
            if not d.alive():
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.pid, signal.SIGKILL)
            time.sleep(0.2)
            report.append(f"{d.name} (pid {d.pid}) killed after {timeout:.0f}s")
            _reap(d.pid)
            continue
        report.append(f"{d.name} (pid {d.pid}) stopped")
    return report


# --------------------------------------------------------------------------------------------
# state file: which daemons this module started
# --------------------------------------------------------------------------------------------


def _read_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(state: dict) -> None:
    BASE.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE_FILE)


def _state_daemons(state: dict) -> list[Daemon]:
    return [Daemon(**d) for d in state.get("daemons", [])]


# --------------------------------------------------------------------------------------------
# probing
# --------------------------------------------------------------------------------------------


def _client_env(slurm_conf: str | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + SYSTEM_PATH
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def _candidate_confs() -> list[str | None]:
    """Configs to try: the caller's own (SLURM_CONF or /etc/slurm), then the one we last wrote."""
    confs: list[str | None] = [None]
    recorded = _read_state().get("slurm_conf")
    if recorded and recorded != os.environ.get("SLURM_CONF"):
        confs.append(recorded)
    return confs


def cluster_responds(slurm_conf: str | None = None) -> bool:
    """True when a slurmctld answers and has at least one usable partition."""
    if _which("scontrol") is None:
        return False
    env = _client_env(slurm_conf)
    try:
        ping = _run(["scontrol", "ping"], env=env, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        return False
    return bool(_default_partition(env))


def _default_partition(env: dict) -> str | None:
    try:
        res = _run(["sinfo", "-h", "-o", "%P"], env=env, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    parts = [p.strip() for p in res.stdout.split() if p.strip()] if res.returncode == 0 else []
    for p in parts:
        if p.endswith("*"):
            return p[:-1]
    return parts[0] if parts else None


@dataclasses.dataclass
class Availability:
    mode: str  # "running" (use it), "startable" (we can install/start), "unavailable"
    reason: str
    slurm_conf: str | None = None  # for "running": the SLURM_CONF that reached it (None = default)


def probe() -> Availability:
    """Can a cluster be had? Never installs or starts anything."""
    for conf in _candidate_confs():
        if cluster_responds(conf):
            return Availability("running", "a SLURM controller already answers", conf)
    if sys.platform != "linux":
        return Availability("unavailable", f"local SLURM cluster needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        return Availability(
            "unavailable",
            "no running SLURM cluster, and starting one needs root "
            f"(euid {os.geteuid()}); run `sudo {sys.executable} {__file__} start` first",
        )
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        if not Path("/etc/debian_version").exists():
            return Availability("unavailable", f"not Debian and SLURM binaries missing: {missing}")
        if _which("apt-get") is None:
            return Availability("unavailable", f"no apt-get to install missing binaries {missing}")
        return Availability("startable", f"can install {sorted({BINARIES[b] for b in missing})} and start")
    return Availability("startable", "packages present; can start the daemons")


# --------------------------------------------------------------------------------------------
# installing
# --------------------------------------------------------------------------------------------


def install_packages() -> float:
    """apt-get install the packages if any binary is missing; returns the seconds spent."""
    if all(_which(b) for b in BINARIES):
        return 0.0
    t0 = time.monotonic()
    env = _client_env()
    env.update(DEBIAN_FRONTEND="noninteractive", NEEDRESTART_MODE="a")
    cmd = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "-o",
        "DPkg::Lock::Timeout=300",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        *PACKAGES,
    ]
    # Without systemd, Debian maintainer scripts would try to start mariadb/munge/slurm from
    # /etc/init.d. Forbid that for the duration of the install (the standard policy-rc.d
    # mechanism) unless a policy is already in place: we start our own daemons.
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# temporary, from ssl-bench local_slurm.py\nexit 101\n")
        policy.chmod(0o755)
    try:
        res = _run(cmd, env=env, timeout=900)
        if res.returncode != 0:  # stale package lists? update once and retry
            upd = _run(["apt-get", "update", "-q"], env=env, timeout=600)
            res = _run(cmd, env=env, timeout=900)
            if res.returncode != 0:
                raise SlurmStartError(
                    f"apt-get install {' '.join(PACKAGES)} failed (rc {res.returncode}) even after "
                    f"apt-get update (rc {upd.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
                )
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        raise SlurmStartError(f"after apt-get install, still missing binaries: {missing}")
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _conf_dir() -> Path:
    """/etc/slurm (so that plain `sbatch` works) unless someone else's slurm.conf lives there."""
    etc = Path("/etc/slurm/slurm.conf")
    if not etc.exists() or MARKER in etc.read_text(errors="replace"):
        return etc.parent
    return BASE / "etc"


def _write_configs(conf_dir: Path, node: str, db_port: int) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    ctld_state = VAR_DIR / "slurmctld"
    spool = VAR_DIR / "slurmd"
    for d in (ctld_state, spool, LOG_DIR, RUN_DIR):
        d.mkdir(parents=True, exist_ok=True)
    cpus = _cpus()
    real_mem = int(_mem_total_mb() * 0.9)  # must stay below what slurmd detects
    slurm_conf = conf_dir / "slurm.conf"
    slurm_conf.write_text(
        f"""{MARKER}
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# credentials expire after 10 s: a requeued job waits cred_expire+1 s (default 120) to restart
AuthInfo=cred_expire=10
StateSaveLocation={ctld_state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={RUN_DIR}/slurmctld.pid
SlurmdPidFile={RUN_DIR}/slurmd.pid
SlurmctldLogFile={LOG_DIR}/slurmctld.log
SlurmdLogFile={LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={max(256, real_mem // cpus)}
ReturnToService=2
SchedulerType=sched/backfill
# schedule pending (e.g. requeued) jobs within seconds, not the default 30-60 s
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=5
InactiveLimit=0
Waittime=0
MinJobAge=300
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_mem} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=7-00:00:00 State=UP
"""
    )
    dbd_conf = conf_dir / "slurmdbd.conf"
    dbd_conf.write_text(
        f"""{MARKER}
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
DebugLevel=info
LogFile={LOG_DIR}/slurmdbd.log
PidFile={RUN_DIR}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser={DB_USER}
StoragePass={DB_PASS}
StorageLoc={DB_NAME}
"""
    )
    dbd_conf.chmod(0o600)  # slurmdbd refuses a world-readable config (it holds a password)
    return slurm_conf


# --------------------------------------------------------------------------------------------
# starting
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ClusterHandle:
    """What start() gives back. ``started`` lists only the daemons this call launched."""

    partition: str
    node: str
    slurm_conf: str | None  # path of slurm.conf when we wrote it; None = caller's default
    started: list[Daemon]
    log_dir: str
    timings: dict[str, float]
    lease: bool = False  # registered as a test session using a cluster this module started

    @property
    def env(self) -> dict[str, str]:
        """Environment variables clients need (SLURM_CONF when the config is ours)."""
        return {"SLURM_CONF": self.slurm_conf} if self.slurm_conf else {}

    @property
    def started_by_us(self) -> bool:
        return bool(self.started)


def _wait_for(
    what: str, check, timeout: float, logs: list[str], interval: float = 0.2, daemon: Daemon | None = None
) -> float:
    t0 = time.monotonic()
    while True:
        try:
            ready = check()
        except (OSError, subprocess.TimeoutExpired):
            ready = False
        if ready:
            return time.monotonic() - t0
        if daemon is not None and not daemon.alive():
            _reap(daemon.pid)
            raise SlurmStartError(
                f"{daemon.name} (pid {daemon.pid}) exited while waiting for {what}\n{_log_tails(logs)}"
            )
        if time.monotonic() - t0 > timeout:
            raise SlurmStartError(f"timed out after {timeout:.0f}s waiting for {what}\n{_log_tails(logs)}")
        time.sleep(interval)


def _munge_works() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=5)
        return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _chown(path: Path, user: str, mode: int | None = None) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    if mode is not None:
        path.chmod(mode)


def _start_munged(started: list[Daemon], env: dict) -> None:
    if _munge_works():  # someone's munged already serves /run/munge: share it
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        res = _run(["mungekey", "--create", "--keyfile", str(key)], timeout=30)
        if res.returncode != 0:
            raise SlurmStartError(f"mungekey --create failed: {res.stderr}")
        _chown(key, "munge", 0o600)
    for d, mode in (
        (Path("/run/munge"), 0o755),
        (Path("/var/lib/munge"), 0o700),
        (Path("/var/log/munge"), 0o700),
    ):
        d.mkdir(parents=True, exist_ok=True)
        _chown(d, "munge", mode)
    log = LOG_DIR / "munged.log"
    log.touch()
    _chown(log, "munge", 0o640)
    d = _spawn("munged", [_which("munged"), "--foreground", f"--log-file={log}"], env=env, user="munge")
    started.append(d)
    _wait_for("munged (munge -n | unmunge)", _munge_works, 15, ["munged"], daemon=d)


def _mysql(sql: str, sock: Path) -> subprocess.CompletedProcess:
    return _run(["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql], timeout=30)


def _start_mariadb(started: list[Daemon], env: dict) -> int:
    datadir = VAR_DIR / "mysql"
    rundir = RUN_DIR / "mysqld"
    rundir.mkdir(parents=True, exist_ok=True)
    _chown(rundir, "mysql", 0o755)
    sock = rundir / "mysqld.sock"
    if not (datadir / "mysql").is_dir():
        shutil.rmtree(datadir, ignore_errors=True)
        datadir.mkdir(parents=True)
        _chown(datadir, "mysql", 0o700)
        res = _run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            timeout=120,
        )
        (LOG_DIR / "mariadb-install-db.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            raise SlurmStartError(f"mariadb-install-db failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    port = _free_port()
    started.append(
        _spawn(
            "mariadbd",
            [
                _which("mariadbd"),
                "--no-defaults",
                "--user=mysql",
                f"--datadir={datadir}",
                f"--socket={sock}",
                f"--pid-file={rundir / 'mysqld.pid'}",
                "--bind-address=127.0.0.1",
                f"--port={port}",
                "--skip-name-resolve",
                f"--log-error={LOG_DIR / 'mariadbd.log'}",
                "--innodb-buffer-pool-size=128M",
                "--innodb-lock-wait-timeout=900",
                "--skip-log-bin",
            ],
            env=env,
        )
    )
    _wait_for("mariadbd", lambda: _mysql("SELECT 1", sock).returncode == 0, 30, ["mariadbd"], daemon=started[-1])
    sql = f"CREATE DATABASE IF NOT EXISTS {DB_NAME};"
    for host in ("127.0.0.1", "localhost"):
        sql += (
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{DB_PASS}';"
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{host}';"
        )
    res = _mysql(sql, sock)
    if res.returncode != 0:
        raise SlurmStartError(f"creating the accounting database failed:\n{res.stderr}")
    return port


def _node_state(env: dict, node: str) -> str:
    try:
        res = _run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=env, timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def _start_daemons(node: str, started: list[Daemon], timings: dict) -> str:
    """Start munged, mariadbd, slurmdbd, slurmctld, slurmd; returns the slurm.conf path."""
    for d in (BASE, LOG_DIR, VAR_DIR, RUN_DIR):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    busy = [f"{p} ({n})" for p, n in SLURM_PORTS.items() if _port_in_use(p)]
    if busy:
        raise SlurmStartError(
            f"SLURM ports already in use by processes this module did not start: {', '.join(busy)}; "
            "a foreign or half-dead SLURM may be running (see `ss -ltnp`)"
        )
    conf_dir = _conf_dir()
    daemon_env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root"}

    t = time.monotonic()
    _start_munged(started, daemon_env)
    timings["munged"] = time.monotonic() - t

    t = time.monotonic()
    port = _start_mariadb(started, daemon_env)
    timings["mariadbd"] = time.monotonic() - t

    slurm_conf = _write_configs(conf_dir, node, port)
    daemon_env["SLURM_CONF"] = str(slurm_conf)  # slurmdbd finds slurmdbd.conf next to it
    client_env = _client_env(str(slurm_conf))

    t = time.monotonic()
    started.append(_spawn("slurmdbd", [_which("slurmdbd"), "-D"], env=daemon_env))
    _wait_for(
        "slurmdbd (sacctmgr list cluster)",
        lambda: _ok(["sacctmgr", "-n", "-P", "list", "cluster"], env=client_env, timeout=10),
        60,
        ["slurmdbd", "mariadbd"],
        interval=0.3,
        daemon=started[-1],
    )
    clusters = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=client_env)
    if CLUSTER_NAME not in clusters.stdout.split():
        res = _run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], env=client_env)
        if res.returncode != 0 and "already exists" not in res.stdout + res.stderr:
            raise SlurmStartError(
                f"sacctmgr add cluster failed:\n{res.stdout}\n{res.stderr}\n{_log_tails(['slurmdbd'])}"
            )
    timings["slurmdbd"] = time.monotonic() - t

    t = time.monotonic()
    started.append(_spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(slurm_conf)], env=daemon_env))
    _wait_for(
        "slurmctld (scontrol ping)",
        lambda: " is UP" in _run(["scontrol", "ping"], env=client_env, timeout=10).stdout,
        30,
        ["slurmctld"],
        daemon=started[-1],
    )
    timings["slurmctld"] = time.monotonic() - t

    t = time.monotonic()
    started.append(_spawn("slurmd", [_which("slurmd"), "-D", "-f", str(slurm_conf)], env=daemon_env))

    def node_idle() -> bool:
        state = _node_state(client_env, node)
        if "drain" in state:  # e.g. left drained by an earlier run; this is our cluster
            _run(["scontrol", "update", f"nodename={node}", "state=resume"], env=client_env)
        return state == "idle"

    _wait_for(f"node {node} idle in sinfo", node_idle, 30, ["slurmd", "slurmctld"], interval=0.3, daemon=started[-1])
    timings["slurmd"] = time.monotonic() - t
    return str(slurm_conf)


def _my_lease() -> dict:
    st = _proc_stat(os.getpid())
    return {"pid": os.getpid(), "starttime": st[1] if st else -1}


def _live_leases(state: dict, exclude: dict | None = None) -> list[dict]:
    out = []
    for lease in state.get("leases", []):
        st = _proc_stat(lease["pid"])
        if st is None or st[1] != lease["starttime"] or st[0] == "Z":
            continue  # that test session is gone (even if it was killed)
        if exclude is not None and lease == exclude:
            continue
        out.append(lease)
    return out


def _join(avail: Availability, node: str, session: bool, adopt: bool, t_all: float) -> ClusterHandle:
    """A cluster already answers: use it. If it is one this module started (recorded in the
    state file), register a lease for a test session, or adopt it for the CLI."""
    env = _client_env(avail.slurm_conf)
    lease = False
    if (session or adopt) and os.access(STATE_FILE, os.W_OK):  # else: not ours, or not root
        with _locked():
            state = _read_state()
            if any(d.alive() for d in _state_daemons(state)):
                if session:
                    state["leases"] = [*_live_leases(state, exclude=_my_lease()), _my_lease()]
                    lease = True
                else:  # `local_slurm.py start`: keep it up until `local_slurm.py stop`
                    state["owner"] = "manual"
                _write_state(state)
    return ClusterHandle(
        partition=_default_partition(env) or PARTITION,
        node=node,
        slurm_conf=avail.slurm_conf,
        started=[],
        log_dir=str(LOG_DIR),
        timings={"total": time.monotonic() - t_all},
        lease=lease,
    )


_NONE = object()


def start(*, session: bool = False, adopt: bool = False, install: bool = True) -> ClusterHandle:
    """Make a cluster available; idempotent.

    - a controller already answers: use it, start nothing (``handle.started == []``);
    - else (root, Debian): install missing packages, start the daemons, wait for an idle node;
    - else: raise SlurmUnavailable(reason).
    Raises SlurmStartError (with daemon log tails) when a start was attempted and failed; the
    daemons started by the failed attempt are stopped again.

    ``session=True`` (the pytest fixture) registers this process as a user of a cluster this
    module started, so that concurrent test sessions on one machine do not pull the cluster
    from under each other: the last session to finish stops it (see ``stop``). A cluster
    started with ``session=False`` stays up until ``stop()`` without a handle; ``adopt=True``
    (the CLI) also turns a running session-started cluster into such a manual one.
    """
    t_all = time.monotonic()
    node = short_hostname()
    avail = probe()
    if avail.mode == "running":
        return _join(avail, node, session, adopt, t_all)
    if avail.mode == "unavailable":
        raise SlurmUnavailable(avail.reason)

    with _locked():
        # another process may have started it while we waited for the lock
        conf = next((c for c in _candidate_confs() if cluster_responds(c)), _NONE)
        if conf is _NONE:
            return _start_locked(node, session, install, t_all)
    return _join(Availability("running", "started concurrently", conf), node, session, adopt, t_all)


def _start_locked(node: str, session: bool, install: bool, t_all: float) -> ClusterHandle:
    # leftovers of an earlier run of ours that no longer form a working cluster: stop them
    leftovers = [d for d in _state_daemons(_read_state()) if d.alive()]
    if leftovers:
        _terminate(leftovers)
    STATE_FILE.unlink(missing_ok=True)

    timings: dict[str, float] = {}
    if install:
        timings["install"] = install_packages()
    elif any(_which(b) is None for b in BINARIES):
        raise SlurmUnavailable("SLURM packages are not installed (install=False)")
    started: list[Daemon] = []
    try:
        slurm_conf = _start_daemons(node, started, timings)
    except BaseException as e:
        _terminate(started)
        if isinstance(e, SlurmStartError):
            raise
        raise SlurmStartError(f"starting the SLURM cluster failed: {e!r}\n{_log_tails()}") from e
    timings["total"] = time.monotonic() - t_all
    (LOG_DIR / "last-start-timings.json").write_text(json.dumps(timings, indent=2))
    _write_state(
        {
            "slurm_conf": slurm_conf,
            "node": node,
            "partition": PARTITION,
            "started_at": time.strftime("%F %T"),
            "owner": "session" if session else "manual",
            "leases": [_my_lease()] if session else [],
            "daemons": [dataclasses.asdict(d) for d in started],
            "timings": timings,
        }
    )
    return ClusterHandle(PARTITION, node, slurm_conf, started, str(LOG_DIR), timings, lease=session)


# --------------------------------------------------------------------------------------------
# stopping
# --------------------------------------------------------------------------------------------


def _cancel_all_jobs(slurm_conf: str | None, timeout: float = 20) -> None:
    """Cancel every job of our cluster so that no slurmstepd outlives slurmd."""
    env = _client_env(slurm_conf)
    try:
        res = _run(["squeue", "-h", "-o", "%i"], env=env, timeout=10)
        if res.returncode != 0 or not res.stdout.split():
            return
        _run(["scancel", *res.stdout.split()], env=env, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = _run(["squeue", "-h", "-o", "%i"], env=env, timeout=10)
            if res.returncode != 0 or not res.stdout.strip():
                return
            time.sleep(0.3)
    except (OSError, subprocess.TimeoutExpired):
        pass


NOTHING_TO_STOP = "nothing to stop (no daemon was started by this module)"


def stop(handle: ClusterHandle | None = None) -> list[str]:
    """Stop daemons started by this module, by pid; never anything else.

    - ``stop()`` (the CLI): every daemon recorded in the state file.
    - ``stop(handle)``: the daemons that ``handle``'s start() launched. With test-session
      leases, a cluster still used by another live test session is left running, and the
      last session to finish stops a session-started cluster whose starter is already gone.
      A handle that started nothing and holds no lease stops nothing.
    """
    if handle is not None and not (handle.started or handle.lease):
        return [NOTHING_TO_STOP]  # it only used a cluster that was already running
    with _locked():
        state = _read_state()
        recorded = _state_daemons(state)
        conf = state.get("slurm_conf")
        mine = _my_lease() if handle is not None and handle.lease else None
        others = _live_leases(state, exclude=mine)
        if handle is None:  # explicit stop: everything this module started
            targets = recorded
        elif state.get("owner") == "manual" and recorded:
            targets = []  # adopted by `local_slurm.py start`: stays up until `stop`
        elif handle.started or (handle.lease and state.get("owner") == "session"):
            # ours (or inherited from a finished session that started it): stop it, unless
            # another live test session still uses it
            targets = [] if others else (handle.started or recorded)
        else:
            targets = []
        if mine is not None and state and not targets:  # release our lease
            state["leases"] = others
            _write_state(state)
        if not any(d.alive() for d in targets):
            if others and handle is not None and (handle.started or handle.lease):
                return [f"left running: {len(others)} other test session(s) still use it"]
            return [NOTHING_TO_STOP]
        if any(d.name == "slurmctld" and d.alive() for d in targets):
            _cancel_all_jobs(handle.slurm_conf if handle is not None and handle.slurm_conf else conf)
        report = _terminate(targets)
        keys = {(d.pid, d.starttime) for d in targets}
        remaining = [d for d in recorded if (d.pid, d.starttime) not in keys and d.alive()]
        if remaining:
            state["daemons"] = [dataclasses.asdict(d) for d in remaining]
            state["leases"] = others
            _write_state(state)
        else:
            STATE_FILE.unlink(missing_ok=True)
        return report


# --------------------------------------------------------------------------------------------
# what the pytest fixture hands to tests
# --------------------------------------------------------------------------------------------


def _import_root() -> Path:
    """The sys.path entry under which this package is importable (tests/ for support.*)."""
    depth = len(__name__.split(".")) if __name__ != "__main__" else 1
    return Path(__file__).resolve().parents[depth - 1]


@dataclasses.dataclass
class SlurmClusterInfo:
    """Yielded by the ``slurm_cluster`` fixture.

    partition: partition to submit to (``debug`` on the cluster we start)
    node: the node's name (short hostname)
    workdir: a fresh directory that both the test and its jobs see (all on one machine)
    started_by_us: whether this test session started the daemons (and will stop them)
    slurm_conf: slurm.conf in use when it is ours (exported as SLURM_CONF for the session)
    log_dir: daemon logs
    """

    partition: str
    node: str
    workdir: Path
    started_by_us: bool
    slurm_conf: str | None
    log_dir: str
    handle: ClusterHandle

    def cli_args(self, *, wait: bool = True) -> list[str]:
        """The `ssl-bench ... --executor slurm` options of a tiny job on this cluster (1 CPU, 10 min)."""
        return [
            "--executor",
            "slurm",
            *(["--wait"] if wait else []),
            "--partition",
            self.partition,
            "--time",
            "10",
            "--cpus-per-task",
            "1",
        ]

    def executor(self, folder: str | Path | None = None, **params):
        """A ``submitit.AutoExecutor`` for this cluster (partition set, 1 CPU, 10 min), whose
        jobs can import modules from ``tests/`` (e.g. ``support.slurm_jobs``)."""
        import submitit

        folder = Path(folder) if folder is not None else self.workdir / "submitit"
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        root = str(_import_root())
        defaults = {
            "slurm_partition": self.partition,
            "timeout_min": 10,
            "cpus_per_task": 1,
            "slurm_setup": [f'export PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}"'],
        }
        defaults.update(params)
        executor.update_parameters(**defaults)
        return executor


def status() -> dict:
    avail = probe()
    state = _read_state()
    out: dict = {
        "mode": avail.mode,
        "reason": avail.reason,
        "state_file": str(STATE_FILE),
        "recorded_daemons": [{"name": d.name, "pid": d.pid, "alive": d.alive()} for d in _state_daemons(state)],
        "log_dir": str(LOG_DIR),
    }
    if avail.mode == "running":
        env = _client_env(avail.slurm_conf)
        out["sinfo"] = _run(["sinfo"], env=env, timeout=15).stdout
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in ("start", "stop", "status"):
        print(f"usage: {Path(__file__).name} start|stop|status", file=sys.stderr)
        return 2
    cmd = argv[0]
    if cmd == "start":
        try:
            h = start(session=False, adopt=True)
        except SlurmUnavailable as e:
            print(f"unavailable: {e}", file=sys.stderr)
            return 1
        except SlurmStartError as e:
            print(f"start failed: {e}", file=sys.stderr)
            return 1
        what = f"started {[d.name for d in h.started]}" if h.started else "already running; nothing started"
        print(f"{what}; partition={h.partition} node={h.node}")
        if h.slurm_conf and h.slurm_conf != "/etc/slurm/slurm.conf":
            print(f"clients need: export SLURM_CONF={h.slurm_conf}")
        print("timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in h.timings.items()))
        return 0
    if cmd == "stop":
        try:
            lines = stop()
        except PermissionError as e:
            print(f"stop needs the rights of whoever started the cluster (root): {e}", file=sys.stderr)
            return 1
        for line in lines:
            print(line)
        return 0
    print(json.dumps(status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
