"""systemd's service notification protocol (``sd_notify``) without extra dependencies.

systemd passes a ``Type=notify`` service the address of a datagram socket in ``$NOTIFY_SOCKET``:
a file-system path, or an abstract socket when it starts with ``@`` (the ``@`` stands for a
leading NUL byte). A message is newline-separated ``KEY=VALUE`` assignments sent as one
datagram: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``EXTEND_TIMEOUT_USEC=...``,
``STOPPING=1``. This follows the self-contained example in systemd's ``sd_notify(3)``.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op; a socket that has gone away is
reported by the return value, never raised: the daemon's work matters more than its manager.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "notify_address", "watchdog_interval"]


def notify_address(env: Mapping[str, str] | None = None) -> str | bytes | None:
    """The socket address systemd gave this process, in the form ``socket.connect`` takes; None if none.

    Only ``AF_UNIX`` addresses are supported (``vsock:`` addresses, for virtual machines, are not).
    """
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def notify(*assignments: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=VALUE`` assignments to systemd as one datagram; True if it was sent.

    ``notify("READY=1", "STATUS=probing done")``. Values must not contain newlines.
    """
    if not assignments:
        raise ValueError("notify needs at least one KEY=VALUE assignment")
    for item in assignments:
        key, equals, _ = item.partition("=")
        if not equals or not key or "\n" in item:
            raise ValueError(f"not a single-line KEY=VALUE assignment: {item!r}")
    address = notify_address(env)
    if address is None:
        return False
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sent = sock.send(message)
    except OSError:
        return False
    return sent == len(message)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.

    None when no watchdog is set, or when ``$WATCHDOG_PID`` names another process.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000
