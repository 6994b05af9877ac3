"""``deribit-kit sim --certfile --keyfile``: the embedded exchange from the command line over wss://
and https:// with a self-signed certificate (Deribit is wss-only; some clients refuse ws://)."""

from __future__ import annotations

import asyncio
import ipaddress
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

pytestmark = pytest.mark.timeout(90)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _line_starting(lines: queue.Queue[str | None], prefix: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"exited before printing {prefix!r}: {seen}")
        seen.append(line)
        if line.startswith(prefix):
            return line


async def _ws_call(url: str, ctx: ssl.SSLContext) -> dict[str, object]:
    async with websockets.connect(url, ssl=ctx) as ws:
        await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/test"}).decode())
        return orjson.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]


def test_sim_serves_wss_and_https_from_the_command_line(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "deribit_kit.cli", "sim", "--port", "0", "--certfile", str(cert),
                             "--keyfile", str(key)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _lines_of(proc)
        ws_url = _line_starting(lines, "WebSocket:").split()[-1]
        http_url = _line_starting(lines, "HTTP:").split()[-1]
        assert ws_url.startswith("wss://127.0.0.1:") and http_url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        reply = asyncio.run(_ws_call(ws_url, ctx))
        assert reply["id"] == 1 and reply["result"] == {"version": "1.2.26"}
        got = httpx.get(http_url + "public/get_time", verify=ctx, timeout=10)
        assert got.status_code == 200 and isinstance(got.json()["result"], int)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate is refused
            httpx.get(http_url + "public/get_time", timeout=10)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
