"""A complete install: the wheel `./scripts/build-wheel` makes, installed with pip into a fresh
venv, serves the demo page and the socket.io.js bundle and runs on the fast paths its
platform has wheels for; and where those files are missing (a wheel built without Node),
`echo-server demo` and the bundle route say how to get them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, free_port
from tests.support.http import http_client
from tests.support.logged_process import LoggedProcess

STATIC = ROOT / "echo_server" / "static"
# What pip prints when it cannot reach an index (no network, no cached wheels).
UNREACHABLE = ("No matching distribution found", "Could not find a version",
               "NewConnectionError", "Temporary failure in name resolution")


def _env(**extra: str) -> dict[str, str]:
    """The user's environment, minus anything that would make the repository importable or
    configure the server behind the test's back."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV")
           and not k.startswith(("LARAVEL_ECHO_SERVER_", "ECHO_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _fast_paths_expected() -> dict[str, bool]:
    """Which fast paths pyproject.toml's environment markers give this machine."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    chosen = {}
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.name in ("orjson", "pysimdjson", "uvloop"):
            chosen[requirement.name] = (requirement.marker is None
                                        or requirement.marker.evaluate())
    assert chosen.keys() == {"orjson", "pysimdjson", "uvloop"}
    return chosen


def _run(argv: list[str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _skip_if_offline(result: subprocess.CompletedProcess[str], what: str) -> None:
    """Building or installing is impossible here only when no index (nor cache) has what
    pip needs; any other failure is the test's to report."""
    if result.returncode != 0 and any(s in result.stderr for s in UNREACHABLE):
        pytest.skip(f"pip cannot reach an index with {what}: "
                    + result.stderr.strip().splitlines()[-1])


async def test_wheel_installed_with_pip_serves_demo_and_bundle(tmp_path: Path) -> None:
    missing = [name for name in ("socket.io.js", "demo/index.html")
               if not (STATIC / name).is_file()]
    if missing:
        pytest.skip(f"echo_server/static/ has no {', '.join(missing)}: ./scripts/setup (needs "
                    "npm) makes them, and a wheel built without them cannot serve them")
    started = time.monotonic()
    built = _run([str(ROOT / "scripts" / "build-wheel"), str(tmp_path / "dist")], timeout=120)
    _skip_if_offline(built, "the build backend (setuptools)")
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    demo_files = {f"echo_server/static/{p.relative_to(STATIC).as_posix()}"
                  for p in (STATIC / "demo").rglob("*") if p.is_file()}
    assert demo_files | {"echo_server/static/socket.io.js"} <= packed

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The test venv's pip installs into the fresh one (--python): the same resolution as a
    # user's `pip install`, without bootstrapping a second pip.
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install",
                      "--quiet", "--disable-pip-version-check", str(wheel)], timeout=180)
    _skip_if_offline(installed, "the dependencies")
    assert installed.returncode == 0, installed.stderr
    # (Outside the repository: `python -c` imports from its working directory first.)
    located = _run([str(python), "-c", "import echo_server; print(echo_server.__file__)"], 30,
                   cwd=tmp_path)
    assert Path(located.stdout.strip()).is_relative_to(venv), "must run from the wheel"
    print(f"built and installed in {time.monotonic() - started:.1f} s")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = free_port()
    (run_dir / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "database": "sqlite",
        "subscribers": {"http": True, "redis": False}}), encoding="utf-8")
    server = LoggedProcess([str(venv / "bin" / "echo-server"), "start"], cwd=run_dir,
                           env=_env())
    await server.start()
    try:
        expected = _fast_paths_expected()
        json_library = "orjson" if expected["orjson"] else "json (standard library)"
        if expected["pysimdjson"]:
            json_library += ", pysimdjson for broadcasts"
        loop = "uvloop" if expected["uvloop"] else "asyncio (standard library)"
        await server.wait_for_line("listening on")
        assert f"JSON: {json_library}; event loop: {loop}" in "\n".join(server.lines)

        base = f"http://127.0.0.1:{port}"
        async with http_client() as http:
            async with http.get(f"{base}/demo/?admin=1") as response:
                assert response.status == 200
                assert await response.read() == (STATIC / "demo" / "index.html").read_bytes()
            async with http.get(f"{base}/socket.io/socket.io.js") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("application/javascript")
                assert await response.read() == (STATIC / "socket.io.js").read_bytes()
        assert await server.stop() == 0
    finally:
        await server.kill()


async def test_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    """Installed without the page and the bundle: `echo-server demo` prints no URL that
    would answer 404 but the command that builds the page, and the bundle's 404 names
    the command that installs it."""
    empty = tmp_path / "static"
    empty.mkdir()
    env = _env(ECHO_SERVER_STATIC_DIR=str(empty))
    demo = LoggedProcess([sys.executable, "-m", "echo_server", "demo", "--port",
                          str(free_port()), "--backend-port", str(free_port())],
                         cwd=tmp_path, env=env)
    await demo.start()
    try:
        assert await demo.wait_exit() == 1
    finally:
        await demo.kill()
    output = "\n".join(demo.lines)
    assert "the demo page is not installed" in output and "./scripts/setup" in output
    assert "http://" not in output

    port = free_port()
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "database": "sqlite",
        "subscribers": {"http": True, "redis": False}}), encoding="utf-8")
    server = LoggedProcess([sys.executable, "-m", "echo_server", "start"], cwd=tmp_path, env=env)
    await server.start()
    try:
        await server.wait_for_line("listening on")
        url = f"http://127.0.0.1:{port}/socket.io/socket.io.js"
        async with http_client() as http, http.get(url) as response:
            assert response.status == 404
            said = await response.text()
        assert "socket.io.js is not installed" in said
        assert "echo-server install-client" in said
        await server.wait_for_line("echo-server install-client")  # and the log says it once
    finally:
        await server.kill()
