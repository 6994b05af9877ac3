"""``deribit-kit demo``: the embedded exchange, the broker's WebSocket port and the dashboards.

One process runs the embedded exchange and a broker (its own upstream client) serving its
Deribit-compatible port; a ``panel serve`` child process serves the dashboard scripts shipped in
:mod:`deribit_kit.ui.dashboards` (package data: it works from a plain wheel install) and connects
to the exchange as an ordinary client (``DERIBIT_TARGET`` = the exchange's URL, with its demo API
key in ``DERIBIT_CLIENT_ID``/``DERIBIT_CLIENT_SECRET``). Ctrl-C (or SIGTERM) stops the child, the
broker port, the client and the exchange, in that order. The operations page (``/ops``) reads the
broker port's ``/metrics`` (its URL in ``DERIBIT_KIT_BROKER_URL``), so it shows the port's clients.
The child also dies with this process (Linux parent-death signal), so nothing is left behind if it
is killed.

``deribit-kit demo --replay DIR`` runs the same on a recording instead of the exchange: the broker
port serves a replay of it, and the child's ``DERIBIT_TARGET`` is ``replay:DIR`` (each dashboard
process replays it too, from the first dashboard that subscribes; ``--speed`` paces both).

``deribit-kit demo --certfile F --keyfile F`` serves the embedded exchange (wss:// and https://) and
the broker port (wss://, https://) with that certificate; the dashboards themselves stay on plain
http:// (a loopback page). The dashboards' process and the demo's own client connect to the wss://
and https:// URLs as any client would, trusting the certificate: the demo passes its path in
``DERIBIT_KIT_CA_FILE`` (:attr:`~deribit_kit.config.Settings.ca_file`, trusted besides the
system's CAs). The certificate must name the host the demo binds (``--host``, 127.0.0.1).

Nothing here imports Panel: the child does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ..config import CA_FILE_ENV
from ..deribit import Deribit
from . import dashboards

APPS = dashboards.APPS
READY_TIMEOUT = 90.0
BROKER_URL_ENV = "DERIBIT_KIT_BROKER_URL"
"""The broker port's HTTP URL the demo gives the dashboards (the operations page reads its metrics)."""


def dashboards_dir() -> Path:
    """The folder of the dashboard scripts inside the installed package."""
    return dashboards.folder()


def package_root() -> Path:
    """The folder holding the ``deribit_kit`` package this process runs (the child imports the same one)."""
    return Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def panel_command(files: list[Path], host: str, port: int) -> list[str]:
    """The ``panel serve`` command line for ``files`` on ``host:port`` (loopback origins only)."""
    origins = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}
    cmd = [sys.executable, "-m", "panel", "serve", *map(str, files), "--address", host, "--port", str(port)]
    for origin in sorted(origins):
        cmd.append(f"--allow-websocket-origin={origin}")
    # a closed tab's session (and its periodic refresh) goes within seconds, not Bokeh's 15-30 s
    cmd += ["--check-unused-sessions", "2000", "--unused-session-lifetime", "4000"]
    return cmd


async def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5.0) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"panel serve exited with code {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the dashboards did not answer at {url} within {timeout:.0f} s")
            await asyncio.sleep(0.25)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()  # only the pid this process started
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def run_demo(args: argparse.Namespace) -> None:
    """``deribit-kit demo``: run the exchange (or a replay), the broker port and the dashboards until Ctrl-C."""
    from ..broker.port import BrokerServer
    from ..cli import tls_context
    from ..sim import Simulator

    folder = Path(args.dashboards) if args.dashboards else dashboards_dir()
    files = dashboards.scripts(folder)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"deribit-kit demo: dashboards not found: {', '.join(missing)} "
                         "(pass --dashboards DIR with market.py, options.py, trading.py and ops.py)")
    host = args.host
    port = args.port or free_port(host)

    tls = tls_context(args.certfile, args.keyfile)  # wss:// and https:// for the exchange and the port
    ca_file = str(Path(args.certfile).resolve()) if tls is not None else None
    replay_dir = str(Path(args.replay).resolve()) if args.replay else None
    sim = None if replay_dir else await Simulator(host, args.sim_port, seed=args.seed, ssl_context=tls).start()
    upstream: Deribit | None = None
    server: BrokerServer | None = None
    kafka_leg: Any = None
    proc: subprocess.Popen[bytes] | None = None
    log_file: Any = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if sim is not None:
            acct = sim.demo_account
            upstream = await Deribit.connect(sim.ws_url, client_id=acct.client_id, client_secret=acct.client_secret,
                                             ca_file=ca_file)
            env = {**os.environ, "DERIBIT_TARGET": sim.ws_url, "DERIBIT_CLIENT_ID": acct.client_id,
                   "DERIBIT_CLIENT_SECRET": acct.client_secret}
        else:
            assert replay_dir is not None
            upstream = await Deribit.replay(replay_dir, speed=args.speed)
            env = {k: v for k, v in os.environ.items() if k not in ("DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET")}
            env["DERIBIT_TARGET"] = f"replay:{replay_dir}?speed={args.speed}"
        if ca_file is not None:  # the dashboards trust the certificate of the exchange and the port
            env[CA_FILE_ENV] = ca_file
        server = await BrokerServer(upstream.broker, host, args.broker_port, tls).start()
        env[BROKER_URL_ENV] = server.http_url
        if args.kafka:  # collect -> Kafka -> a second broker and dashboards fed only from it (ui/kafka_demo.py)
            from .kafka_demo import KafkaLeg

            kafka_leg = KafkaLeg(upstream.broker, host, bootstrap=args.bootstrap, prefix=args.kafka_prefix)
            await kafka_leg.start(files, dict(env), args.verbose)
        root = str(package_root())  # the child imports the deribit_kit this process runs
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.pop("BOKEH_RESOURCES", None)  # "cdn" would make the pages reach out to the internet
        log_file = None if args.verbose else tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below)
            prefix="deribit-kit-demo-", suffix=".log", delete=False)
        proc = subprocess.Popen(panel_command(files, host, port), env=env,
                                stdout=log_file, stderr=subprocess.STDOUT if log_file else None,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        base = f"http://{host}:{port}"
        waiter = asyncio.ensure_future(_wait_http(f"{base}/market", proc, READY_TIMEOUT))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            return
        stopper.cancel()
        try:
            waiter.result()
        except (RuntimeError, TimeoutError) as exc:
            tail = Path(log_file.name).read_text(errors="replace")[-4000:] if log_file is not None else ""
            raise SystemExit(f"deribit-kit demo: {exc}\n{tail}") from None
        source = "the embedded exchange" if sim is not None else "the replay"
        print(f"deribit-kit demo: {source}, the broker port and the dashboards are up.")
        print(f"  Market:    {base}/market")
        print(f"  Options:   {base}/options")
        print(f"  Trading:   {base}/trading")
        print(f"  Ops:       {base}/ops")
        print(f"  Index:     {base}/")
        print(f"  Broker:    {server.ws_url}   (Deribit-compatible WebSocket, public channels; "
              f"metrics at {server.http_url}/metrics)")
        if sim is not None:
            print(f"  Exchange:  {sim.ws_url}   (API key {acct.client_id} / {acct.client_secret})")
        else:
            print(f"  Replay:    {replay_dir}   (speed {args.speed}; a replay has no account: trading is off)")
        for line in kafka_leg.lines() if kafka_leg is not None else ():
            print(line)
        if log_file is not None:
            print(f"  Log:       {log_file.name}")
        print("Ctrl-C stops everything.", flush=True)
        watcher = asyncio.ensure_future(asyncio.to_thread(proc.wait))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if watcher.done():
            print(f"deribit-kit demo: panel serve exited with code {proc.returncode}; stopping", file=sys.stderr)
        else:
            print("deribit-kit demo: stopping…", flush=True)
    finally:
        if kafka_leg is not None:
            await kafka_leg.stop()
        if proc is not None:
            await asyncio.to_thread(_stop_child, proc)
        if server is not None:
            await server.stop()
        if upstream is not None:
            await upstream.close()
        if sim is not None:
            await sim.stop()
        if log_file is not None:
            log_file.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
    print("deribit-kit demo: stopped.", flush=True)


def add_parser(sub: Any) -> None:
    """Add the ``demo`` command to the ``deribit-kit`` parser."""
    d = sub.add_parser("demo", help="the embedded exchange + broker port + live dashboards (Ctrl-C stops)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=5006, help="dashboards port (0 picks a free one)")
    d.add_argument("--broker-port", type=int, default=0, help="broker WebSocket port (0 picks a free one)")
    d.add_argument("--sim-port", type=int, default=0, help="embedded exchange port (0 picks a free one)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--certfile", default=None,
                   help="TLS certificate: the exchange and the broker port serve wss:// and https:// (the dashboards "
                        "trust it)")
    d.add_argument("--keyfile", default=None, help="its private key, when not in the certificate file")
    d.add_argument("--dashboards", default=None, help="folder of the dashboard scripts (default: the package's)")
    d.add_argument("--verbose", action="store_true", help="show panel serve's own log")
    d.add_argument("--replay", default=None, metavar="DIR", help="run on a recording (deribit-kit record) instead")
    d.add_argument("--speed", default="1.0", help="with --replay: max, or a factor of the recorded pace (1.0)")
    d.add_argument("--kafka", action="store_true",
                   help="also publish to Kafka and serve a second broker and dashboards fed only from it")
    d.add_argument("--bootstrap", default=None, help="with --kafka: a Kafka cluster (default: a local Tansu)")
    d.add_argument("--kafka-prefix", default="deribit", help="with --kafka: the topic prefix")
    d.set_defaults(func=run_demo)


class DemoProcess:
    """``deribit-kit demo`` as a child process, for tests and benchmarks.

        with DemoProcess(port=free_port()) as demo:
            demo.urls["Market"], demo.urls["Broker"], demo.exchange_key

    :meth:`start` waits (at most ``timeout`` s) for the line that says everything is up and parses
    the printed URLs; :meth:`stop` sends SIGINT (Ctrl-C) and waits for a clean exit.
    """

    READY_LINE = "Ctrl-C stops everything."

    def __init__(self, port: int | None = None, *extra: str, env: dict[str, str] | None = None,
                 python: str | None = None, cwd: str | None = None) -> None:
        self.port = port or free_port()
        self.extra = list(extra)
        self.env = env
        self.python = python or sys.executable  # another environment's interpreter (a wheel install)
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.urls: dict[str, str] = {}
        self.exchange_key: tuple[str, str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        """Everything the demo printed so far."""
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        """The demo process's pid."""
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """Pids of the demo's child processes (the ``panel serve`` servers, a local Tansu with
        ``--kafka``), whichever of its threads started them; Linux only."""
        pids: list[int] = []
        try:
            tasks = list(Path(f"/proc/{self.pid}/task").iterdir())
        except OSError:
            return []
        for task in tasks:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return sorted(set(pids))

    def start(self, timeout: float = READY_TIMEOUT) -> DemoProcess:
        """Run the demo and wait (at most ``timeout`` s) until it says everything is up; raises otherwise."""
        cmd = [self.python, "-m", "deribit_kit.cli", "demo", "--port", str(self.port), *self.extra]
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=self.cwd)
        self._reader = threading.Thread(target=self._read, name="demo-output", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.urls:
            self.stop()
            raise RuntimeError(f"deribit-kit demo did not come up within {timeout:.0f} s:\n{self.output}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        pattern = re.compile(r"^\s+(\w+):\s+(\S+)(?:.*API key (\S+) / (\S+)\))?")
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            m = pattern.match(line)
            if m:
                self.urls[m.group(1)] = m.group(2)
                if m.group(3):
                    self.exchange_key = (m.group(3), m.group(4))
            if line.strip() == self.READY_LINE:
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C the demo and wait for it; returns its exit code (killed if it hangs)."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # only the pid this object started
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return int(proc.returncode)

    def __enter__(self) -> DemoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
