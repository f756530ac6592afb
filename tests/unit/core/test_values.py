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
