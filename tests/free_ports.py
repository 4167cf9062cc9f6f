"""Ports for the servers tests start (Prometheus, `ray start`, apps' metrics endpoints).

A port picked by binding port 0 comes from the kernel's ephemeral range, where the
session's Ray keeps binding its workers' servers (on every address): one of them took
such a port before the test's server bound it (a scrape reached a gRPC server:
``BadStatusLine``; a ``ray start`` never started). These come from below that range,
and none is handed out twice in a process.
"""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["free_port"]

#: Ports handed out in this process (maybe not bound yet).
_ISSUED: set[int] = set()


def free_port(ip: str = "127.0.0.1", first: int = 9479, last: int = 29_999) -> int:
    """A port free now on ``ip``, in ``first..last`` below the ephemeral range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in range(first, min(last, low - 1) + 1):
        if port in _ISSUED:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ip, port))
            except OSError:
                continue
        _ISSUED.add(port)
        return port
    raise RuntimeError(f"no free port in {first}-{last} below the ephemeral range (from {low})")
