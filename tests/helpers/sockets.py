"""Local TCP ports for tests: a free one, whether one answers, and which addresses it listens
on (read from /proc: no `ss` or `netstat` needed)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

_LISTEN = "0A"  # the TCP state code of a listening socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts a TCP connection on `host:port` within half a second."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def listening_addresses(port: int) -> list[str]:
    """The local addresses with a socket listening on `port` (IPv4 and IPv6), sorted."""
    found = []
    for table, size in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, port_hex = fields[1].partition(":")
            if fields[3] != _LISTEN or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            ordered = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            found.append(str(ipaddress.ip_address(ordered)))
    return sorted(found)
