"""The fleet service: devices upload telemetry (runs, tunings) to it; operators read it back.

``protocol`` is the wire format shared by the server and ``agent.upload``; ``storage`` the
fleet's SQLite file; ``app`` the FastAPI application (needs the ``fleet`` extra).
"""
