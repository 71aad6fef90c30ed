"""The reading commands answer an unreachable Redis in one line, without its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import shown_url
from tests.cli import run_kpi

# Port 1 on loopback: nothing listens, the connection is refused at once.
UNREACHABLE = "redis://reader:s3cret@127.0.0.1:1/0"


@pytest.mark.parametrize(
    "args",
    [("get", "dso"), ("get", "dso", "--history", "3"), ("get", "--all"), ("watch", "-n", "0.2")],
    ids=lambda args: " ".join(args),
)
def test_a_reading_command_says_redis_is_unreachable_in_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_kpi(tmp_path, *args, KPI_REDIS_URL=UNREACHABLE)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "kpi: error: cannot read Redis at redis://reader:***@127.0.0.1:1/0: "
    )
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://user:p%40ss@redis.example:6380/2", "rediss://user:***@redis.example:6380/2"),
        ("redis://user:pw@[::1]:6379", "redis://user:***@[::1]:6379"),
        ("redis://user@localhost", "redis://user@localhost"),
    ],
)
def test_shown_url_hides_only_the_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
