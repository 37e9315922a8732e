"""A fleet service one protocol version ahead, as a real process: the "upgraded fleet" of the versioning tests.

    python -m harness.newer_fleet --db DB --port N

serves ``agent.fleet.app.create_app`` (the same application ``edgetune fleet serve`` runs) with an
``Acceptance`` that also reads protocol ``NEWER_PROTOCOL`` and the record kind ``power``, the way
the next edgetune release's fleet would. The operator token is ``EDGETUNE_FLEET_OPERATOR_TOKEN``.
"""

from __future__ import annotations

import argparse
import os

from agent.telemetry.record import KINDS, PROTOCOLS, Field

NEWER_PROTOCOL = max(PROTOCOLS) + 1
POWER_FIELDS = (Field("kernel", "text"), Field("shape", "text"), Field("watts", "seconds"))


def main(argv: list[str] | None = None) -> None:
    """Serve the newer fleet on 127.0.0.1 until killed."""
    import uvicorn

    from agent.fleet.app import create_app
    from agent.fleet.protocol import Acceptance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    acceptance = Acceptance(protocols=(*PROTOCOLS, NEWER_PROTOCOL), kinds={**KINDS, "power": POWER_FIELDS})
    app = create_app(args.db, os.environ["EDGETUNE_FLEET_OPERATOR_TOKEN"], acceptance=acceptance)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
