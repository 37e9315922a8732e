"""The on-device daemon: systemd integration first (``notify``)."""
