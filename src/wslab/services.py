"""Real outside servers as child processes: Debian's ``redis-server`` and ``nginx``, on loopback, in temp dirs.

Each runs in a temporary directory of its own (config, socket, pid and log files) and stops with
``await service.stop()``, ``wslab.stop_all()`` or the interpreter's exit; none is left behind.

>>> redis = await start_redis()            # doctest: +SKIP
>>> redis.url                              # doctest: +SKIP
'unix:///tmp/wslab-redis-.../redis.sock'
>>> proxy = await start_nginx([chat.port])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from .servers import _registry, _unregister

__all__ = ["ChatProcess", "MissingProgram", "need", "Nginx", "RedisServer", "Service", "start_chat", "start_nginx", "start_redis"]

READY_TIMEOUT = 10.0  # how long a service may take to start, in seconds
STOP_TIMEOUT = 5.0  # how long it may take to exit after SIGTERM before it is killed


class MissingProgram(FileNotFoundError):
    """A program a chapter needs is not installed; the message says how to install it."""


class Service:
    """A child process wslab started, with its own temporary directory; ``stop()`` ends both."""

    program = ""

    def __init__(self, name: str, process: subprocess.Popen[bytes], directory: Path) -> None:
        self.name = name
        self.process = process
        self.directory = directory
        self.port = 0  # the TCP port, where it has one (redis here listens on a unix socket only)

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
        self._end_process()
        shutil.rmtree(self.directory, ignore_errors=True)
        _unregister(self)

    def _end_process(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
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

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def restart(self) -> None:
        """Stop this Redis (SIGTERM; nothing is saved) and start a new one on the same socket: an empty Redis."""
        await asyncio.to_thread(self._end_process)
        self.process = subprocess.Popen(self.process.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await _until_ready(self, lambda: _redis_answers(self.socket_path))


class Nginx(Service):
    """``nginx`` as a reverse proxy on ``127.0.0.1:port`` in front of WebSocket servers (``upstreams``)."""

    program = "nginx"

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], directory: Path, binary: str, port: int,
        upstreams: Sequence[int], options: dict[str, str],
    ) -> None:
        super().__init__(name, process, directory)
        self.binary, self.port, self.upstreams, self.options = binary, port, list(upstreams), dict(options)

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def route_to(self, upstreams: Sequence[int]) -> None:
        """Send new connections to ``upstreams`` only (e.g. to take a draining server out): nginx reloads
        its config; connections already open stay where they are."""
        self.upstreams = list(upstreams)
        _write_nginx_config(self.directory, self.port, self.upstreams, self.options)
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
    directory = Path(tempfile.mkdtemp(prefix="wslab-chat-"))
    command = [sys.executable, "-m", "wslab.chat", "--port", "0", *(["--redis", redis] if redis else []), *args]
    await _replace(name)
    with open(directory / "log", "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
    directory = Path(tempfile.mkdtemp(prefix="wslab-redis-"))
    service: RedisServer | None = None
    try:
        command = [
            binary, "--port", "0", "--unixsocket", str(directory / "redis.sock"), "--unixsocketperm", "700",
            "--dir", str(directory), "--logfile", str(directory / "log"), "--save", "", "--appendonly", "no",
            "--daemonize", "no",
        ]
        await _replace(name)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        service = RedisServer(name, process, directory)
        await _until_ready(service, lambda: _redis_answers(service.socket_path))
    except BaseException:
        if service is not None:
            service._stop_now()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    _registry[name] = service
    return service


async def start_nginx(upstreams: Sequence[int], name: str = "nginx", **options: str) -> Nginx:
    """Start ``nginx`` on a free port of 127.0.0.1, proxying WebSockets to ``127.0.0.1:<each upstream>``.

    ``options`` set nginx directives in the proxied location, e.g. ``proxy_read_timeout="2s"``.
    """
    binary = _program("nginx", "nginx")
    directory = Path(tempfile.mkdtemp(prefix="wslab-nginx-"))
    await _replace(name)
    for attempt in range(5):  # the free port is found by binding, so another program may take it first
        port = _free_port()
        _write_nginx_config(directory, port, upstreams, options)
        process = subprocess.Popen(
            _nginx_command(binary, directory), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        service = Nginx(name, process, directory, binary, port, upstreams, options)
        try:
            await _until_ready(service, lambda: _port_answers(port))
            break
        except RuntimeError:
            if "Address already in use" not in service.log() or attempt == 4:
                service._stop_now()
                raise
        except BaseException:
            service._stop_now()
            raise
    _registry[name] = service
    return service


def _nginx_command(binary: str, directory: Path) -> list[str]:
    return [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "log")]


def _write_nginx_config(directory: Path, port: int, upstreams: Sequence[int], options: dict[str, str]) -> None:
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


async def _replace(name: str) -> None:
    previous = _registry.get(name)
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


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError):
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@atexit.register
def _stop_services_at_exit() -> None:
    for service in [s for s in list(_registry.values()) if isinstance(s, Service)]:
        with contextlib.suppress(Exception):
            service._stop_now()
