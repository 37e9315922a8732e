"""edgetune: an on-device kernel autotuning agent (import name ``agent``)."""
