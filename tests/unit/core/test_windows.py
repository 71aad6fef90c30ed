"""RFC 3339 text of window boundaries: cached, and always what formatting gives."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from streams.core import windows
from streams.core.windows import rfc3339

SECONDS = st.one_of(
    st.integers(min_value=0, max_value=4_102_444_800).map(float),
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False).map(lambda t: round(t, 3)),
)


def expected(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=UTC)
    text = dt.isoformat() if dt.microsecond else dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return text.replace("+00:00", "Z")


@given(st.lists(SECONDS, min_size=1, max_size=50))
def test_cached_text_equals_formatting_also_after_the_cache_is_cleared(ts: list[float]) -> None:
    for t in ts + ts:
        assert rfc3339(t) == expected(t)
    windows._RFC3339_CACHE.clear()
    assert [rfc3339(t) for t in ts] == [expected(t) for t in ts]


def test_the_cache_stays_bounded() -> None:
    for i in range(windows._RFC3339_CACHE_MAX * 2 + 5):
        rfc3339(1_700_000_000.0 + i)
    assert len(windows._RFC3339_CACHE) <= windows._RFC3339_CACHE_MAX
    assert rfc3339(0.0) == "1970-01-01T00:00:00Z" and rfc3339(3600) == "1970-01-01T01:00:00Z"
