"""Free local ports for tests that start servers."""

from __future__ import annotations

import socket

# The demo plant's devices listen on consecutive ports from DEMO_BASE_PORT.
DEMO_DEVICES = 4


def free_port_run(count: int) -> int:
    """A first port with `count` free ports from it (the demo's devices take consecutive ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports found")
