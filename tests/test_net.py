from __future__ import annotations

import pytest

from syncd.net import is_cleartext_remote_url, is_loopback_host


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "a.localhost"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["", "10.0.0.1", "example.com", "localhost.example.com", "::2", "128.0.0.1"]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def test_cleartext_remote_url() -> None:
    assert is_cleartext_remote_url("http://api.fullstory.com")
    assert is_cleartext_remote_url("HTTP://10.1.1.1:80/x")
    assert not is_cleartext_remote_url("https://api.fullstory.com")
    assert not is_cleartext_remote_url("http://127.0.0.1:5000")
