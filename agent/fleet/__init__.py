"""The fleet service: devices upload telemetry (runs, tunings) to it; operators read it back.

``protocol`` is the server side of the telemetry wire format (``agent.telemetry``); ``storage`` the
fleet's SQLite file; ``app`` the FastAPI application (needs the ``fleet`` extra).
"""
