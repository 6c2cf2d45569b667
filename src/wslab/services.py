"""Real outside servers as child processes: Debian's ``redis-server`` and ``nginx``, and ``python -m wslab.chat``.

They listen on loopback only. Each keeps its files (config, socket, pid and log files) in a directory of its
own inside this process's directory, ``<tmp>/wslab-<user>-<pid namespace>-<pid>``, and stops with
``await service.stop()``, ``wslab.stop_all()`` or the interpreter's exit, which in a Jupyter kernel includes a
normal shutdown or restart (a child made by ``os.fork()`` stops none of them: they are its parent's). When this
process dies without exiting (killed, out of memory), each child gets SIGTERM from the operating system
(Linux), and the next process that starts a service removes the directories that no process owns any more.

>>> redis = await start_redis()            # doctest: +SKIP
>>> redis.url                              # doctest: +SKIP
'unix:///tmp/wslab-alice-4026531836-4242/redis-.../redis.sock'
>>> proxy = await start_nginx([chat.port])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import errno
import fcntl
import getpass
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import PortInUseError
from .servers import _previous, _registry, _unregister

__all__ = ["ChatProcess", "MissingProgram", "need", "Nginx", "RedisServer", "Service", "start_chat", "start_nginx", "start_redis"]

READY_TIMEOUT = 10.0  # how long a service may take to start, in seconds
STOP_TIMEOUT = 5.0  # how long it may take to exit after SIGTERM before it is killed
READY_PATH = "/.wslab-ready"  # where nginx itself answers with the token of its start (see start_nginx)
_PORT_ATTEMPTS = 5  # free ports that start_nginx tries, in case another program takes one first


class MissingProgram(FileNotFoundError):
    """A program a chapter needs is not installed; the message says how to install it."""


# -- the lifeline: children never outlive this process ----------------------------------------------------

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    """Linux's ``prctl()``, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl  # type: ignore[no-any-return]


_prctl = _load_prctl()


def _die_with(parent: int) -> Callable[[], None] | None:
    """For ``Popen(preexec_fn=...)``: the child asks the kernel for SIGTERM when its parent dies.

    That needs no exit handler of this process, so it also works when the process is killed (SIGKILL, out of
    memory). If ``parent`` died already, between the fork and this call, the child gives up at once.
    """
    prctl = _prctl
    if prctl is None:
        return None

    def lifeline() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return lifeline


# What the spawning thread is asked to do: Popen(command, **kwargs), the outcome set on the future.
_Job = tuple[list[str], dict[str, Any], "concurrent.futures.Future[subprocess.Popen[bytes]]"]


class _Spawner:
    """The one thread that starts every child process; it lives as long as this process.

    The kernel sends the death signal when the *thread* that forked the child ends, not the whole process: a
    child forked by a short-lived thread (``asyncio.to_thread``'s, a thread-mode server's) would get SIGTERM as
    soon as that thread ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job]
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process the thread belongs to: after a fork, the child has no such thread

    def submit(self, command: Sequence[str], **kwargs: Any) -> concurrent.futures.Future[subprocess.Popen[bytes]]:
        """``subprocess.Popen(command, **kwargs)`` in the spawning thread, in a session of its own, with a lifeline.

        A session of its own: signals for this process's group (Ctrl-C in a terminal, Jupyter's interrupt and
        its sweep of the kernel's process group at shutdown) do not reach the child; wslab stops it itself.
        """
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name="wslab.services spawner", daemon=True)
                self._thread.start()
                self._pid = os.getpid()
            self._jobs.put((list(command), kwargs, future))
        return future

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            command, kwargs, future = jobs.get()
            try:
                process = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with(os.getpid()), **kwargs)
            except BaseException as exc:  # handed to the caller, who raises it
                future.set_exception(exc)
            else:
                future.set_result(process)


_spawner = _Spawner()


async def _popen(command: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child process (see :class:`_Spawner`) without blocking this loop while it forks."""
    future = _spawner.submit(command, **kwargs)
    try:
        return await asyncio.to_thread(future.result)
    except asyncio.CancelledError:  # nobody will own the child: end it as soon as it exists
        future.add_done_callback(_end_unowned)
        raise


def _end_unowned(future: concurrent.futures.Future[subprocess.Popen[bytes]]) -> None:
    if future.exception() is None:
        future.result().kill()
        future.result().wait()


# -- directories: one per process, one inside it per service ------------------------------------------------
#
# A process's directory is alive while a process holds the lock on its "owner" file, not while its pid runs:
# a pid says nothing about a kernel in another container (another pid namespace) that shares /tmp, where two
# kernels that are both pid 1 are common. The kernel releases the lock however the owner ends, even killed.

_directories_lock = threading.Lock()
_swept_in = 0  # the process that already removed the directories of dead owners
_home_lock: int | None = None  # the open "owner" file of this process's directory, locked (LOCK_EX)


def _user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry): the uid will do
        name = str(os.getuid())
    return re.sub(r"[^\w.-]", "_", name)


def _pid_namespace() -> str:
    """``"<inode>-"`` of this process's pid namespace (Linux), "" where there is none: pids repeat across them."""
    try:
        return f"{os.stat('/proc/self/ns/pid').st_ino}-"
    except OSError:
        return ""


def _owner_directory() -> Path:
    """``<tmp>/wslab-<user>-<pid namespace>-<pid>``: where this process's services keep their files."""
    return Path(tempfile.gettempdir()) / f"wslab-{_user()}-{_pid_namespace()}{os.getpid()}"


def _remove_if_unowned(entry: Path) -> None:
    """Remove ``entry`` (a ``wslab-<user>-...`` directory) if no process holds the lock on its owner file."""
    owner = entry / "owner"
    try:
        info = entry.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return
        descriptor = os.open(owner, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # gone meanwhile, or not a directory wslab made
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked, present = os.fstat(descriptor), os.stat(owner, follow_symlinks=False)
        if (locked.st_dev, locked.st_ino) != (present.st_dev, present.st_ino):
            return  # removed and made anew meanwhile: the new owner file is another's
        for inside in entry.iterdir():  # the owner file last: a sweep cut short is finished by the next one
            if inside.name == "owner":
                continue
            if inside.is_dir() and not inside.is_symlink():
                shutil.rmtree(inside, ignore_errors=True)
            else:
                inside.unlink(missing_ok=True)
        owner.unlink()
        entry.rmdir()
    except OSError:  # BlockingIOError: its owner lives; any other: leave it to a later sweep
        pass
    finally:
        os.close(descriptor)


def _remove_dead_owners() -> None:
    """Remove this user's ``wslab-<user>-...`` directories that no process owns any more (killed, crashed)."""
    pattern = re.compile(rf"wslab-{re.escape(_user())}-(\d+-)?\d+")
    with contextlib.suppress(OSError):
        for entry in Path(tempfile.gettempdir()).iterdir():
            if pattern.fullmatch(entry.name):
                _remove_if_unowned(entry)


def _claim_home() -> Path:
    """This process's directory, made if needed with its owner file locked for as long as the directory lives.

    It is made under another name and renamed when its lock is held, so a sweep never sees it unowned.
    """
    global _home_lock
    home = _owner_directory()
    if _home_lock is not None:
        return home
    draft = Path(tempfile.mkdtemp(prefix=".wslab-new-", dir=home.parent))
    descriptor = os.open(draft / "owner", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.write(descriptor, f"{os.getpid()}\n".encode())  # for a reader; the lock is what counts
        try:
            os.rename(draft, home)
        except OSError:  # a dead owner's directory with this name, or one that is not this user's
            _remove_if_unowned(home)
            try:
                os.rename(draft, home)
            except OSError:
                raise RuntimeError(f"{home} exists and is not this process's directory: remove it, or set TMPDIR") from None
    except BaseException:
        os.close(descriptor)
        shutil.rmtree(draft, ignore_errors=True)
        raise
    _home_lock = descriptor
    return home


def _service_directory(kind: str) -> Path:
    """A new directory for one service, inside this process's directory (made, with its owner file, if needed).

    The first call in a process also removes the directories that dead processes left behind.
    """
    global _swept_in
    with _directories_lock:
        if _swept_in != os.getpid():
            _remove_dead_owners()
            _swept_in = os.getpid()
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=_claim_home()))


def _remove_directory(directory: Path) -> None:
    """Remove a service's directory, and this process's directory once no service is left in it."""
    global _home_lock
    shutil.rmtree(directory, ignore_errors=True)
    home = directory.parent
    with _directories_lock, contextlib.suppress(OSError):
        if _home_lock is not None and home == _owner_directory() and all(entry.name == "owner" for entry in home.iterdir()):
            (home / "owner").unlink()
            home.rmdir()
            os.close(_home_lock)  # only now: until the directory is gone, its lock says it is owned
            _home_lock = None


def _forget_the_parents_directory() -> None:
    """In a child made by ``os.fork()``: the directory and its services stay the parent's (see Service._stop_now).

    Its copy of the lock is closed, which leaves the parent's lock held.
    """
    global _home_lock, _directories_lock
    _directories_lock = threading.Lock()  # another thread may have held it at the fork
    if _home_lock is not None:
        with contextlib.suppress(OSError):
            os.close(_home_lock)
        _home_lock = None


os.register_at_fork(after_in_child=_forget_the_parents_directory)


class Service:
    """A child process wslab started, with its own temporary directory; ``stop()`` ends both."""

    program = ""
    kind = "a child process"

    def __init__(self, name: str, process: subprocess.Popen[bytes], directory: Path) -> None:
        self.name = name
        self.process = process
        self.directory = directory
        self.port = 0  # the TCP port, where it has one (redis here listens on a unix socket only)
        self._owner = os.getpid()  # a child made by os.fork() has the object too, but not the service
        self._told: subprocess.Popen[bytes] | None = None  # the process that got SIGTERM already

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """What the service wrote to its log so far."""
        path = self.directory / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        """SIGTERM, wait (bounded), SIGKILL if needed, then remove the temporary directory. Idempotent."""
        await asyncio.to_thread(self._stop_now)

    def _stop_soon(self, close_timeout: float | None = None) -> None:
        self._stop_now()

    def _stop_now(self) -> None:
        if os.getpid() != self._owner:  # in a forked child: forget it here, leave it running for its owner
            _unregister(self)
            return
        self._end_process()
        _remove_directory(self.directory)
        _unregister(self)

    def _terminate(self) -> None:
        """Send SIGTERM, once: several services can then exit side by side."""
        if self.process.poll() is None and self._told is not self.process:
            self.process.send_signal(signal.SIGTERM)
            self._told = self.process

    def _end_process(self) -> None:
        self._terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """``kill -9``: the process dies at once, as in a crash (its directory stays until ``stop()``)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited with {self.process.returncode}"
        return f"<{type(self).__name__} {self.name!r} {state}>"


class RedisServer(Service):
    """``redis-server`` on a unix socket in its own directory (no TCP port: nothing else on the machine can
    reach it, which matters on a shared hub). ``url`` is what ``redis.asyncio.from_url`` takes."""

    program = "redis-server"
    kind = "a redis-server process (services.start_redis)"

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def restart(self) -> None:
        """Stop this Redis (SIGTERM; nothing is saved) and start a new one on the same socket: an empty Redis."""
        await asyncio.to_thread(self._end_process)
        self.process = await _popen(self.process.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await _until_ready(self, lambda: _redis_answers(self.socket_path))


class Nginx(Service):
    """``nginx`` as a reverse proxy on ``127.0.0.1:port`` in front of WebSocket servers (``upstreams``)."""

    program = "nginx"
    kind = "an nginx process (services.start_nginx)"

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], directory: Path, binary: str, port: int,
        upstreams: Sequence[int], options: dict[str, str], token: str,
    ) -> None:
        super().__init__(name, process, directory)
        self.binary, self.port, self.upstreams, self.options = binary, port, list(upstreams), dict(options)
        self.token = token  # what this nginx, and no other program, answers at READY_PATH

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def route_to(self, upstreams: Sequence[int]) -> None:
        """Send new connections to ``upstreams`` only (e.g. to take a draining server out): nginx reloads
        its config; connections already open stay where they are."""
        self.upstreams = list(upstreams)
        _write_nginx_config(self.directory, self.port, self.upstreams, self.options, self.token)
        before = len(self.log())
        done = await asyncio.to_thread(
            subprocess.run, _nginx_command(self.binary, self.directory) + ["-s", "reload"],
            capture_output=True, timeout=READY_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"nginx did not reload: {done.stderr.decode(errors='replace').strip()}")
        async with asyncio.timeout(READY_TIMEOUT):  # nginx reloads in the background: watch its log
            while "gracefully shutting down" not in self.log()[before:]:  # the old worker stopped accepting
                await asyncio.sleep(0.02)


class ChatProcess(Service):
    """``python -m wslab.chat`` as a process of its own; ``log()`` is everything it printed."""

    program = "python -m wslab.chat"
    kind = "a chat process (services.start_chat)"

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def terminate(self) -> None:
        """SIGTERM: the chat drains (``/health`` says so, clients get 1012) and exits; see ``wait()``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait (bounded) until the process exits; return its exit status."""
        return await asyncio.to_thread(self.process.wait, timeout)


async def start_chat(name: str = "chat", *, redis: str | None = None, args: Sequence[str] = ()) -> ChatProcess:
    """Start ``python -m wslab.chat --port 0 [--redis URL] ARGS``; return once it prints where it listens."""
    command = [sys.executable, "-m", "wslab.chat", "--port", "0", *(["--redis", redis] if redis else []), *args]
    await _replace(name, ChatProcess.kind)
    directory = await asyncio.to_thread(_service_directory, "chat")
    try:
        with open(directory / "log", "wb") as log:
            process = await _popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except BaseException:
        _remove_directory(directory)
        raise
    service = ChatProcess(name, process, directory)
    try:
        await _until_ready(service, lambda: "listening on " in service.log())
    except BaseException:
        service._stop_now()
        raise
    service.port = int(service.log().split("listening on ", 1)[1].split("/ws", 1)[0].rsplit(":", 1)[1])
    _registry[name] = service
    return service


def _program(name: str, package: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/local/sbin") / name) if p.exists()), None
    )
    if found is None:
        raise MissingProgram(
            f"{name} is not installed. On Debian or Ubuntu: `sudo apt-get install {package}`; on macOS: "
            f"`brew install {package}`. On a JupyterHub, ask the admin to install it into the image."
        )
    return found


def need(*programs: str) -> bool:
    """True if every program is installed. Else print how to install each, and in a notebook make every later
    cell print that it was skipped instead of running (so a missing program shows one message, no traceback)."""
    missing = []
    for name in programs:
        try:
            _program(name, name)
        except MissingProgram as error:
            missing.append(str(error))
    if not missing:
        return True
    print("\n".join(missing))
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - not in a notebook
        return False
    shell = get_ipython()
    if shell is not None:
        note = f"print({'skipped: this cell needs ' + ' and '.join(programs) + ' (see above)'!r})\n"
        shell.input_transformers_post.append(lambda lines: [note])
    return False


async def start_redis(name: str = "redis") -> RedisServer:
    """Start ``redis-server`` in a temporary directory, on a unix socket; return once it answers PING."""
    binary = _program("redis-server", "redis-server")
    await _replace(name, RedisServer.kind)
    directory = await asyncio.to_thread(_service_directory, "redis")
    service: RedisServer | None = None
    try:
        command = [
            binary, "--port", "0", "--unixsocket", str(directory / "redis.sock"), "--unixsocketperm", "700",
            "--dir", str(directory), "--logfile", str(directory / "log"), "--save", "", "--appendonly", "no",
            "--daemonize", "no",
        ]
        process = await _popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        service = RedisServer(name, process, directory)
        await _until_ready(service, lambda: _redis_answers(service.socket_path))
    except BaseException:
        if service is not None:
            service._stop_now()
        else:
            _remove_directory(directory)
        raise
    _registry[name] = service
    return service


async def start_nginx(upstreams: Sequence[int], name: str = "nginx", **options: str) -> Nginx:
    """Start ``nginx`` on a free port of 127.0.0.1, proxying WebSockets to ``127.0.0.1:<each upstream>``.

    ``options`` set nginx directives in the proxied location, e.g. ``proxy_read_timeout="2s"``. It counts as
    started once it answers :data:`READY_PATH` with the token of this start: a program that merely answers on
    its port is not this nginx. The free port is found by binding, so another program may take it before nginx
    does: nginx then tries another, and after five a :class:`PortInUseError` says so.
    """
    binary = _program("nginx", "nginx")
    await _replace(name, Nginx.kind)
    taken: list[str] = []
    while len(taken) < _PORT_ATTEMPTS:
        port, token = _free_port(), secrets.token_hex(8)
        directory = await asyncio.to_thread(_service_directory, "nginx")
        service: Nginx | None = None
        try:
            _write_nginx_config(directory, port, upstreams, options, token)
            process = await _popen(
                _nginx_command(binary, directory), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            service = Nginx(name, process, directory, binary, port, upstreams, options, token)
            await _until_ready(service, _nginx_ready(service))
        except _PortTaken as failure:
            assert service is not None
            service._stop_now()
            taken.append(str(failure))
            continue
        except BaseException:
            if service is not None:
                service._stop_now()
            else:
                _remove_directory(directory)
            raise
        _registry[name] = service
        return service
    raise PortInUseError(
        errno.EADDRINUSE,
        f"nginx could not listen: another program took each of the {_PORT_ATTEMPTS} free ports it was given "
        f"before nginx could bind it. nginx said: {'; '.join(dict.fromkeys(taken))}",
    )


class _PortTaken(Exception):
    """nginx could not bind its port: another program has it (the message is nginx's own line)."""


def _nginx_ready(service: Nginx) -> Callable[[], bool]:
    """The readiness test of one nginx start: its own token at READY_PATH; _PortTaken if its bind failed."""

    def ready() -> bool:
        failed = next((line for line in service.log().splitlines() if f"bind() to 127.0.0.1:{service.port} failed" in line), None)
        if failed is not None:
            message = failed.split("[emerg] ", 1)[-1].split(": ", 1)[-1]
            if "(98:" in failed:
                raise _PortTaken(message)
            raise RuntimeError(f"nginx could not listen: {message}")
        return _nginx_answers(service.port, service.token)

    return ready


def _nginx_command(binary: str, directory: Path) -> list[str]:
    return [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "log")]


def _write_nginx_config(directory: Path, port: int, upstreams: Sequence[int], options: dict[str, str], token: str) -> None:
    """The whole config: every path inside ``directory``, the WebSocket upgrade headers passed on."""
    d = directory
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""  # as root, workers would run as nobody
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams) or "        server 127.0.0.1:9 down;"
    extra = "\n".join(f"            {key} {value};" for key, value in options.items())
    (d / "nginx.conf").write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/log info;
events {{ worker_connections 16384; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream backends {{
        least_conn;  # WebSockets stay open: send each new one where fewest are open, not merely the next in turn
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location = {READY_PATH} {{
            default_type text/plain;
            return 200 "{token}";
        }}
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;  # with the port: a page's Origin then matches it
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{extra}
        }}
    }}
}}
"""
    )


async def _replace(name: str, kind: str) -> None:
    """Stop the service that runs under ``name``, as a re-run cell expects; NameTakenError if it is of another kind."""
    previous = _previous(name, kind)
    if previous is not None:
        await previous.stop()


async def _until_ready(service: Service, ready: Callable[[], bool]) -> None:
    """Poll (every 20 ms, at most READY_TIMEOUT s) until ``ready()``; fail with the log if the process died."""
    async with asyncio.timeout(READY_TIMEOUT):
        while not await asyncio.to_thread(ready):
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.program} exited with {service.process.returncode}: {service.log()[-2000:]}")
            await asyncio.sleep(0.02)


def _redis_answers(path: Path) -> bool:
    with contextlib.suppress(OSError):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    return False


def _nginx_answers(port: int, token: str) -> bool:
    """True if what answers on ``port`` is the nginx started with ``token``."""
    with contextlib.suppress(OSError):
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"GET {READY_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            answer = b""
            while len(answer) < 65536 and (chunk := sock.recv(4096)):
                answer += chunk
            return answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n" + token.encode())
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@atexit.register
def _stop_services_at_exit() -> None:
    """Stop every service as the interpreter exits: SIGTERM to all first, so that they exit side by side."""
    services = [s for s in list(_registry.values()) if isinstance(s, Service) and s._owner == os.getpid()]
    for service in services:
        with contextlib.suppress(Exception):
            service._terminate()
    for service in services:
        with contextlib.suppress(Exception):
            service._stop_now()
