"""``pip install 'deribit-kit[dashboards]'`` as a new user does it: build the wheel from a copy of
the source, install it with the dashboards extra into a fresh virtualenv, run ``deribit-kit demo``
from a folder outside the checkout, and see every dashboard URL answer.

Fast on purpose (it runs in the default suite): the virtualenv is made without pip (this
environment's pip installs into it with ``--python``), byte-compilation is skipped, and packages come
from pip's cache and the machine's find-links/index configuration (pip.conf, ``PIP_*``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

pytest.importorskip("panel", reason="the demo serves the dashboards: needs the dashboards extra")

from deribit_kit.ui.demo import DemoProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def _pip(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _source_copy(dest: Path) -> Path:
    """The checkout's files (tracked or new, not ignored, as on disk), so the build never writes into it."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "notebooks/", "bench/", "stress/", "docs/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_the_wheel_installs_and_serves_the_demo_from_outside_the_checkout(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
    _pip("wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("deribit_kit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "deribit_kit/py.typed" in names
    for app in ("market", "options", "trading", "ops"):
        assert f"deribit_kit/ui/dashboards/{app}.py" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _pip("--python", str(python), "install", "-q", "--no-compile", f"{wheel}[dashboards]", cwd=tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = subprocess.run([str(python), "-c", "import deribit_kit; print(deribit_kit.__file__)"], cwd=outside,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where  # the installed wheel, not the checkout

    demo = DemoProcess(free_port(), python=str(python), cwd=str(outside), env=env)
    try:
        demo.start(timeout=120)
        assert {"Market", "Options", "Trading", "Ops", "Broker"} <= set(demo.urls), demo.output
        with httpx.Client(timeout=15) as http:
            for name in ("Market", "Options", "Trading", "Ops"):
                r = http.get(demo.urls[name])
                assert r.status_code == 200 and "bokeh" in r.text.lower(), (name, r.status_code)
            assert http.get(f"{demo.urls['Broker'].replace('ws://', 'http://').split('/ws/')[0]}/metrics"
                            ).status_code == 200
    finally:
        code = demo.stop()
    assert code == 0, demo.output
