"""Options shared by several ``edgetune`` commands, defined once."""

from __future__ import annotations

import click

__all__ = ["fleet_db_option", "json_option"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

fleet_db_option = click.option(
    "--db", "fleet_db", metavar="PATH|URL",
    help="The fleet's database: a SQLite file (a path or sqlite:///path), or PostgreSQL "
         "(postgresql://user:password@host:port/database). Default: fleet.db next to the device store.")
