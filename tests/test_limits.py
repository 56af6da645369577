"""Body size limits, over real HTTP against gunicorn: oversized bodies get 413 before
they are read, and the worker's memory stays flat."""

from __future__ import annotations

import socket
import subprocess
import threading

import psutil
import pytest
import requests

from tests.conftest import ROOT
from tests.conftest import free_port
from tests.conftest import subprocess_environment
from tests.conftest import wait_for_http

pytestmark = pytest.mark.slow

TWENTY_MB = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    """One gunicorn for the module (each test reads its own answers; starting one per
    test cost seconds each)."""
    folder = tmp_path_factory.mktemp("limits")
    env = dict(subprocess_environment(folder), DATABASE_URL=f"sqlite:///{folder / 'hub.db'}")
    subprocess.run(["surveyhub", "db", "upgrade"], env=env, check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(
        ["gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "wsgi:app"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz")
    yield url, port, process
    process.terminate()
    process.wait(20)


def post_raw(port: int, path: str, size: int, declare: bool = True) -> str:
    """POST `size` bytes and return the status line; the server may answer (and close)
    before the body is all sent, as it should."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        length = f"Content-Length: {size}\r\n" if declare else "Transfer-Encoding: chunked\r\n"
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        answer = bytearray()

        def read():
            while chunk := sock.recv(65536):
                answer.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        block = b"comment=" + b"x" * (1024 * 1024)
        sent = 0
        try:
            while sent < size and not answer:
                piece = block[: size - sent]
                sock.sendall(piece if declare else b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            if not declare and not answer:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: it has answered already
        reader.join(30)
        return answer.split(b"\r\n", 1)[0].decode()


def worker_rss(process: subprocess.Popen) -> int:
    """The worker's peak resident memory so far (VmHWM), so a body read and freed again
    still shows."""
    (worker,) = psutil.Process(process.pid).children()
    with open(f"/proc/{worker.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize(
    "path", ["/hooks/kustomer/1", "/r/some-token/5", "/r/some-token/comment", "/login"]
)
def test_twenty_megabytes_get_413_and_the_worker_stays_flat(gunicorn, path):
    url, port, process = gunicorn
    # Warm up first (imports, compiled templates, and the buffers of one body read up to
    # the limit): what is measured is what twenty megabytes add.
    for _ in range(3):
        requests.post(f"{url}{path}", data={"comment": "x" * 1000}, timeout=10)
        post_raw(port, path, 200 * 1024, declare=False)
    post_raw(port, path, 3 * 1024 * 1024, declare=False)
    before = worker_rss(process)
    for _ in range(3):
        assert post_raw(port, path, TWENTY_MB) == "HTTP/1.1 413 REQUEST ENTITY TOO LARGE"
        # Chunked, with no length to refuse up front: /login reads its body and stops at
        # the limit (the peak memory below shows the rest was never held).
        assert post_raw(port, path, TWENTY_MB, declare=False).startswith("HTTP/1.1 4")
    grown = worker_rss(process) - before
    assert grown < 8 * 1024 * 1024, f"the worker grew by {grown / 2**20:.1f} MiB"
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_security_headers_and_cookie_flags(gunicorn):
    url, _, _ = gunicorn
    page = requests.get(f"{url}/login", timeout=5)
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    cookie = page.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_broken_chunked_body_gets_a_4xx(gunicorn):
    url, port, _ = gunicorn
    for path in ("/hooks/kustomer/1", "/r/some-token/5", "/login"):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: application/json\r\n\r\nzz\r\nnot a chunk\r\n0\r\n\r\n".encode()
            )
            answer = sock.recv(65536).split(b"\r\n", 1)[0].decode()
        assert answer.startswith("HTTP/1.1 4"), (path, answer)
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
