from __future__ import annotations

import pytest

from pipeline.core.errors import UsageError
from pipeline.core.values import Rate, check_base_url, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/10s", Rate(100, 10.0)),
        ("100/10", Rate(100, 10.0)),
        ("5/s", Rate(5, 1.0)),
        ("600/1m", Rate(600, 60.0)),
        ("100/500ms", Rate(100, 0.5)),
        (" 7 / 2.5s ", Rate(7, 2.5)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "100", "fast", "0/10s", "10/0s", "-1/10s", "10/10x"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    "url",
    [
        "https://services.leadconnectorhq.com",
        "http://127.0.0.1:8099",
        "http://localhost:1",
        "http://[::1]:80/",
    ],
)
def test_base_url_accepted(url: str) -> None:
    assert check_base_url(url, allow_insecure_http=False) == url.rstrip("/")


def test_plain_http_elsewhere_needs_consent() -> None:
    with pytest.raises(UsageError, match="unencrypted"):
        check_base_url("http://api.example.com", allow_insecure_http=False)
    assert check_base_url("http://api.example.com", allow_insecure_http=True)


@pytest.mark.parametrize("url", ["ftp://x", "services.leadconnectorhq.com", "https://"])
def test_base_url_rejects_nonsense(url: str) -> None:
    with pytest.raises(UsageError):
        check_base_url(url, allow_insecure_http=False)


@pytest.mark.parametrize("url", ["https://user:pw@api.example.com", "http://user@127.0.0.1:8099"])
def test_a_base_url_with_credentials_is_refused(url: str) -> None:
    """aiohttp refuses a URL with credentials beside an Authorization header: every request
    was an internal error (exit 70, a traceback a row) before this rule."""
    with pytest.raises(UsageError, match="a user or password in the URL cannot be sent"):
        check_base_url(url, allow_insecure_http=True)


def test_fail_on_names_the_unknown_names_only_when_the_value_is_more() -> None:
    from pipeline.core.values import parse_fail_on

    with pytest.raises(UsageError) as whole:
        parse_fail_on("bogus")
    assert str(whole.value).endswith("comma-separated")  # the value itself is shown beside
    with pytest.raises(UsageError) as part:
        parse_fail_on("invalid,bogus,nope")
    assert str(part.value).endswith("comma-separated; not bogus, nope")
