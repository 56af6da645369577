"""Packaging: a third-party plugin installed with pip, and a non-editable install of the hub."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT
from tests.conftest import TEST_PLUGINS

pytestmark = pytest.mark.slow

LIST_METRICS = (
    "from hub.app import create_app\n"
    "app = create_app({'SQLALCHEMY_DATABASE_URI': 'sqlite://'})\n"
    "print(sorted(app.extensions['hub'].registry.metrics))"
)


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
        timeout=300,
    )


def copy_sources(source, destination, names=None):
    """Copy a project to a temp folder, so builds never write into the checkout."""
    if names is None:
        shutil.copytree(source, destination)
        return destination
    destination.mkdir()
    for name in names:
        (shutil.copytree if (source / name).is_dir() else shutil.copy2)(
            source / name, destination / name
        )
    return destination


def install_plugin(tmp_path_factory, project: str):
    """A throwaway third-party plugin, installed by pip into its own folder."""
    target = tmp_path_factory.mktemp("site")
    source = copy_sources(TEST_PLUGINS / project, tmp_path_factory.mktemp("src") / project)
    pip("install", "--no-deps", "--target", str(target), str(source))
    return target


@pytest.fixture(scope="module")
def demo_plugin_site(tmp_path_factory):
    return install_plugin(tmp_path_factory, "surveyhub-demo-metric")


def run(args, env, cwd):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_third_party_plugin_shows_up_after_pip_install(demo_plugin_site, subprocess_env, tmp_path):
    env = dict(subprocess_env, PYTHONPATH=str(demo_plugin_site))
    listing = run(["surveyhub", "plugins"], env, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "demo_metric  surveyhub-demo-metric 1.2.3  hooks: register_metrics" in listing.stdout
    assert "kustomer  surveyhub-kustomer" in listing.stdout
    metrics = run([sys.executable, "-c", LIST_METRICS], env, tmp_path)
    assert metrics.stdout.strip() == "['ces', 'csat', 'effort-stars', 'nps']"


def test_third_party_plugin_disappears_when_blocked(demo_plugin_site, subprocess_env, tmp_path):
    env = dict(subprocess_env, PYTHONPATH=str(demo_plugin_site), HUB_DISABLED_PLUGINS="demo_metric")
    listing = run(["surveyhub", "plugins"], env, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "demo_metric" not in listing.stdout
    assert "metrics  surveyhub-metrics" in listing.stdout
    metrics = run([sys.executable, "-c", LIST_METRICS], env, tmp_path)
    assert metrics.stdout.strip() == "['ces', 'csat', 'nps']"


def test_plugin_that_fails_to_import_is_named(tmp_path_factory, subprocess_env, tmp_path):
    site = install_plugin(tmp_path_factory, "surveyhub-broken-plugin")
    env = dict(subprocess_env, PYTHONPATH=str(site))
    result = run(["surveyhub", "plugins"], env, tmp_path)
    assert result.returncode == 1
    assert "Error: Plugin 'broken' (from surveyhub-broken-plugin) failed to load: ImportError" in (
        result.stderr
    )
    assert "HUB_DISABLED_PLUGINS=broken" in result.stderr
    assert "Traceback" not in result.stderr
    blocked = run(["surveyhub", "plugins"], dict(env, HUB_DISABLED_PLUGINS="broken"), tmp_path)
    assert blocked.returncode == 0, blocked.stderr


def test_misspelt_hook_in_a_plugin_stops_the_cli(subprocess_env, tmp_path):
    env = dict(
        subprocess_env,
        PYTHONPATH=str(ROOT),
        HUB_PLUGINS="tests.plugins.misspelt_hook_plugin",
    )
    result = run(["surveyhub", "plugins"], env, tmp_path)
    assert result.returncode == 1
    assert "Error: Plugin 'tests.plugins.misspelt_hook_plugin' implements 'register_metric'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_missing_secret_stops_the_wsgi_app_with_a_clear_message(subprocess_env, tmp_path):
    env = dict(subprocess_env, PYTHONPATH=str(ROOT))
    env.pop("HUB_SECRET_KEY")
    result = run([sys.executable, "-c", "import wsgi"], env, tmp_path)
    assert result.returncode == 1
    assert "ConfigError: HUB_SECRET_KEY is not set. Set HUB_SECRET_KEY" in result.stderr


def test_wheel_ships_templates_and_migrations_and_works_installed(subprocess_env, tmp_path):
    source = copy_sources(
        ROOT, tmp_path / "src", ["pyproject.toml", "README.md", "hub", "templates", "migrations"]
    )
    pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source))
    wheel = next((tmp_path / "dist").glob("surveyhub-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "hub/templates/base.html",
        "hub/templates/auth/login.html",
        "hub/templates/errors/500.html",
        "hub/migrations/env.py",
        "hub/migrations/alembic.ini",
        "hub/migrations/script.py.mako",
        "hub/migrations/versions/0001_initial_schema.py",
        "hub/translations/de/LC_MESSAGES/messages.mo",
        "hub/templates/email/survey.html",
        "hub/static/hub.css",
        "hub/static/pico/pico.min.css",
        "hub/static/pico/LICENSE.md",
    ):
        assert expected in names

    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel))
    script = (
        "import hub, flask_migrate; from hub.app import create_app; "
        "from hub.extensions import db; from sqlalchemy import inspect\n"
        f"assert hub.__file__.startswith({str(site)!r}), hub.__file__\n"
        "app = create_app({'TESTING': True, 'SECRET_KEY': 'x' * 32,"
        f" 'SQLALCHEMY_DATABASE_URI': 'sqlite:///{tmp_path}/w.db'}})\n"
        "with app.app_context():\n"
        "    flask_migrate.upgrade()\n"
        "    print(sorted(inspect(db.engine).get_table_names()))\n"
        "    print(app.test_client().get('/static/pico/pico.min.css').status_code)\n"
        "    print(app.test_client().get('/login').status_code)\n"
    )
    result = run(
        [sys.executable, "-c", script], dict(subprocess_env, PYTHONPATH=str(site)), tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "'deliveries'" in result.stdout and "'write_backs'" in result.stdout
    assert result.stdout.strip().endswith("200\n200")


def test_every_hub_package_is_in_the_wheels_package_list():
    """The hub's package list is written out (templates/ and migrations/ are mapped into
    `hub`), so a new subpackage must be added to it: this catches a forgotten one."""
    import tomllib

    from setuptools import find_packages

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"hub", *(f"hub.{name}" for name in find_packages(str(ROOT / "hub")))}
    assert found <= listed, f"add {sorted(found - listed)} to pyproject.toml"


def test_the_three_wheels_work_in_a_fresh_virtualenv(tmp_path, redis_client):
    """The README's production install: wheels, a new virtualenv, no source tree in sight."""
    import os
    import venv

    from tests.conftest import free_port
    from tests.conftest import redis_url
    from tests.conftest import wait_for_http

    dist = tmp_path / "dist"
    builds = (
        (ROOT, ["pyproject.toml", "README.md", "hub", "templates", "migrations"]),
        (ROOT / "plugins" / "metrics", None),
        (ROOT / "plugins" / "kustomer", None),
    )
    for n, (source, names) in enumerate(builds):
        copy = copy_sources(source, tmp_path / f"src{n}", names)
        pip("wheel", "--no-deps", "-w", str(dist), str(copy))
    wheels = sorted(str(w) for w in dist.glob("*.whl"))
    assert len(wheels) == 3
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["-c", str(ROOT / "constraints.txt"), *wheels],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HUB_", "PYTEST_", "VIRTUAL_ENV"))
        and key not in {"DATABASE_URL", "REDIS_URL", "PYTHONPATH"}
    }
    env.update(
        PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        HUB_SECRET_KEY="a-production-like-secret-key-of-some-length",
        HUB_BASE_URL="http://localhost:5000",
        HUB_INSTANCE_PATH=str(tmp_path / "instance"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.db'}",
        REDIS_URL=redis_url(),
    )
    surveyhub = str(env_dir / "bin" / "surveyhub")

    def cli(*args, stdin=None):
        result = subprocess.run(
            [surveyhub, *args],
            env=env,
            cwd=elsewhere,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # no terminal: a key is read from the pipe, as in CI
        )
        assert result.returncode == 0, f"surveyhub {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    where = subprocess.run(
        [str(python), "-c", "import hub, surveyhub_kustomer; print(hub.__file__)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(env_dir)), where.stdout + where.stderr
    assert "kustomer-sandbox" in cli("--help")
    plugins = cli("plugins")
    assert "kustomer  surveyhub-kustomer" in plugins and "metrics  surveyhub-metrics" in plugins
    cli("db", "upgrade")
    port = free_port()
    sandbox = subprocess.Popen(
        [surveyhub, "kustomer-sandbox", "--port", str(port)],
        env=env,
        cwd=elsewhere,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/__sandbox/state")
        env["HUB_ALLOWED_HELPDESK_URLS"] = url
        connected = cli(
            "connect",
            "kustomer",
            "--name",
            "Sandbox",
            "--setting",
            f"url={url}",
            stdin="sandbox-api-key\n",
        )
        assert "Saved connection 1." in connected
        cli("survey", "create", "--connection", "1", "--metric", "nps")
        preview = cli("scan", "1", "--dry-run", "--lookback-days", "30")
        assert " would send, " in preview and "skip: started by an agent" in preview
    finally:
        sandbox.terminate()
        sandbox.wait(10)
