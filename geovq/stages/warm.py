"""Warm job processes: each job forked from a server that has already imported torch, numpy, scipy and faiss.

Every Snakemake job is a fresh Python process, and importing torch alone takes about 2 s, longer
than many of the pipeline's jobs compute. workflow_scripts/run_stage.py therefore hands its job to
a *warm server* (:func:`delegate`): a process of the same interpreter, environment and checkout
that imported the heavy third-party modules once (:data:`PRELOAD`) and forks one child per job. The
child takes over the job process's stdin, stdout and stderr, its working directory, environment and
``sys.path``, drops every ``geovq`` module (they are imported afresh from the job's checkout, as in
a fresh process) and runs the stage through :func:`geovq.stages.runner.run_rule`, exactly as the job
process would have; the job process waits for its exit status and exits with it. So the job's wall
time, exit status, log and outputs are what they would be without the server, and if the job process
dies (Snakemake killed it), its child kills itself at once.

The server imports no geovq module and computes nothing: no thread pool is started and CUDA is not
touched (a CUDA context cannot survive a fork), so a child starts from a process that has only
imported libraries, in the order a job imports them. One server serves one interpreter, checkout
and thread setting (its socket's name hashes them), only its own user (checked on every
connection), and exits after :data:`IDLE` seconds without a job.

Off (every job in its own process, as before) with ``GEOVQ_WARM=0``, under SLURM (every job is an
allocation of its own), or when no server answers within :data:`START_TIMEOUT` seconds. The results
are the same either way: tests/test_reproducibility.py runs the test config without the server and
compares its tables with a run with it byte for byte. Snakemake's benchmark files keep the job's
wall time (``s``); their CPU and memory columns then see only the waiting job process, so each
job's log ends with its own peak RSS and CPU time (geovq.stages.runner).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

# imported by the server in the order a job imports them (geovq.io: numpy; the runner: torch, then faiss)
PRELOAD = (
    "numpy",
    "torch",
    "torch.nn.functional",
    "torch.func",
    "torch._dynamo",  # imported by the first optimizer a job builds: 1.2 s
    "faiss",
    "scipy.sparse",
    "scipy.sparse.csgraph",
    "scipy.stats",
    "scipy.spatial.distance",
    "pandas",
    "PIL.Image",
    "torchvision.utils",
    "matplotlib",  # pyplot is imported by geovq.plots after it selects the Agg backend
    "snakemake.script",
)
IDLE = float(os.environ.get("GEOVQ_WARM_IDLE", 60.0))  # seconds without a job before the server exits
START_TIMEOUT = 60.0  # seconds a job waits for a server it started before running on its own
# the environment that libraries read when imported (the server's must be the job's)
ENV_KEYS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "PYTHONHASHSEED",
)
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")
_ACCEPTED = b"A"


def process_start(pid="self"):
    """When process ``pid`` started (seconds since the epoch; None where /proc has no answer).

    /proc/<pid>/stat gives the start in clock ticks since boot; the boot's epoch time is taken from
    this moment's time.time() and CLOCK_BOOTTIME, not /proc/stat's btime, which is whole seconds
    (rounded down: up to 1 s early, so every start-up read up to 1 s too long)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return None


def enabled(environ=os.environ) -> bool:
    """Whether jobs go through a warm server: not with GEOVQ_WARM=0, not inside a SLURM job."""
    flag = environ.get("GEOVQ_WARM", "1").strip().lower()
    return flag not in ("0", "false", "no", "off") and "SLURM_JOB_ID" not in environ


def socket_path(root) -> Path:
    """The server socket of this interpreter, checkout ``root``, environment and server code."""
    h = hashlib.sha1()
    own = Path(__file__).stat()
    parts = [sys.executable, sys.prefix, sys.version, str(Path(root).resolve()), f"{own.st_mtime_ns}:{own.st_size}"]
    parts += [f"{k}={os.environ.get(k, '')}" for k in ENV_KEYS]
    for part in parts:
        h.update(part.encode() + b"\0")
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"geovq-warm-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    if base.stat().st_uid != os.getuid() or base.stat().st_mode & 0o077:
        raise OSError(f"{base}: not a private directory of this user")
    return base / f"{h.hexdigest()[:16]}.sock"


# ---------------------------------------------------------------- the job's side


def _recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _connect(path):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _start_server(path, root):
    log = open(path.with_suffix(".log"), "ab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    server = subprocess.Popen(
        [sys.executable, "-m", "geovq.stages.warm", str(path), str(IDLE)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd="/",
        env=env,
        start_new_session=True,  # not in Snakemake's process group: a job's Ctrl-C is not the server's
        close_fds=True,
    )
    log.close()  # the server keeps its own copy
    return server


def _connect_or_start(root, timeout=START_TIMEOUT):
    path = socket_path(root)
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one job starts the server; the others wait for it here
        try:
            return _connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            server = _start_server(path, root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.poll() is None:  # a server that died: no waiting
            try:
                return _connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.05)
    return None


def delegate(smk, root):
    """Run Snakemake job ``smk`` in a child of the warm server for checkout ``root``.

    Returns the job's exit status, or None when no server could take the job (switched off, none
    started in time, or it closed before accepting): then the caller runs the job itself."""
    if not enabled():
        return None
    request = {"smk": smk, "sys_path": list(sys.path), "cwd": os.getcwd(), "env": dict(os.environ)}
    try:  # before connecting: a server child forked for a request that never comes would fail
        request = pickle.dumps({**request, "started": process_start()})
    except Exception:  # a job object that does not pickle: run it here
        return None
    try:
        conn = _connect_or_start(root)
    except OSError:
        return None
    if conn is None:
        return None
    with conn:
        try:
            socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
            conn.sendall(request)
            if _recv_exact(conn, 1) != _ACCEPTED:
                return None  # the server went away before taking the job: run it here
        except OSError:
            return None
        try:
            status = _recv_exact(conn, _STATUS.size)
        except OSError:
            status = None
    if status is None:
        print(
            f"geovq error in rule {smk.rule}: the job's process, forked from the warm server, ended "
            "without an exit status (killed, or out of memory?); GEOVQ_WARM=0 runs it in a process of its own",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return _STATUS.unpack(status)[0]


# ---------------------------------------------------------------- the server's side


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _child(conn):
    """The forked child: become the job process described by the request on ``conn``, run it, report."""
    code, done = 1, threading.Event()
    try:
        msg, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        request = pickle.loads(_recv_exact(conn, _HEADER.unpack(msg)[0]))
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["GEOVQ_WARM_FORKED"] = "1"  # the job's log says how it ran (geovq.stages.runner)
        sys.path[:] = request["sys_path"]
        for name in [m for m in sys.modules if m == "geovq" or m.startswith("geovq.")]:
            del sys.modules[name]  # the job's own checkout is imported afresh
        conn.sendall(_ACCEPTED)

        def watch():  # the job process is gone (killed): so is its child
            conn.recv(1)
            if not done.is_set():
                os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        try:
            run_rule = importlib.import_module("geovq.stages.runner").run_rule
            run_rule(request["smk"], started=request["started"])
            code = 0
        except SystemExit as e:
            code = _exit_code(e)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        done.set()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            conn.sendall(_STATUS.pack(code))
        except OSError:
            pass
        os._exit(code)


def serve(path, idle=IDLE):
    """Import :data:`PRELOAD`, then fork a child per job connecting to ``path`` until idle."""
    path = Path(path)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink()  # a dead server's socket (its starter holds the lock)
    except FileNotFoundError:
        pass
    srv.bind(str(path))
    os.chmod(path, 0o600)
    srv.listen(64)
    ino = path.stat().st_ino
    children, last = set(), time.monotonic()

    def take(conn):
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            conn.close()
            return
        child = os.fork()
        if child == 0:
            srv.close()
            _child(conn)  # never returns
        conn.close()
        children.add(child)

    while True:
        for child in list(children):
            if os.waitpid(child, os.WNOHANG)[0]:
                children.discard(child)
        if children:
            last = time.monotonic()
        ready, _, _ = select.select([srv], [], [], 1.0)
        if ready:
            take(srv.accept()[0])
            last = time.monotonic()
        elif time.monotonic() - last > idle:
            break
    # new jobs start a new server from here on; the ones already queued are still served
    if path.exists() and path.stat().st_ino == ino:
        path.unlink()
    srv.setblocking(False)
    while True:
        try:
            take(srv.accept()[0])
        except BlockingIOError:
            break
    srv.close()
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    serve(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else IDLE)
