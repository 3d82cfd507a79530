"""Facts about network addresses that several parts decide on (plain http, TLS defaults)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed): traffic that never leaves
    the machine, where cleartext is no exposure."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_cleartext_remote_url(url: str) -> bool:
    """True for an `http://` URL whose host is not loopback: what it carries can be read on
    the way."""
    parts = urlsplit(url)
    return parts.scheme.lower() == "http" and not is_loopback_host(parts.hostname or "")
