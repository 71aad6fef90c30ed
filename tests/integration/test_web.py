"""The worker's HTTP server: bound to loopback by default, ``/kpis`` behind KPI_WEB_TOKEN."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from streams.config import Settings
from tests.integration.helpers import Worker

TOKEN = "tok-3f9a1c77"


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            octets = [str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add(".".join(octets))
    return found


def test_kpis_need_the_token_and_the_server_listens_on_loopback_only(
    kpi_env: Settings, tmp_path: Path
) -> None:
    settings = kpi_env.model_copy(update={"web_token": SecretStr(TOKEN)})
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        assert _listening_addresses(settings.web_port) == {"127.0.0.1"}
        url = worker.url("/kpis")
        assert httpx.get(url, timeout=5).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        ok = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and "kpis" in ok.json()
        # Scrapers and probes need no token.
        assert httpx.get(worker.url("/metrics"), timeout=5).status_code == 200
        health = httpx.get(worker.url("/health"), timeout=5)
        assert health.status_code in (200, 503)
        assert TOKEN not in health.text
    finally:
        worker.stop()
    assert TOKEN not in worker.log()


def test_an_open_kpis_page_without_a_token(kpi_env: Settings, tmp_path: Path) -> None:
    worker = Worker(kpi_env, tmp_path / "worker.log").start()
    try:
        assert httpx.get(worker.url("/kpis"), timeout=5).status_code == 200
    finally:
        worker.stop()
