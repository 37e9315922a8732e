"""The ``edgetune`` group, its context, and the one place errors become messages.

An :class:`EdgetuneError` becomes one line on stderr and exit status 1; an unexpected
exception becomes one line naming it and exit status 70 (``--debug`` shows the traceback);
a store locked by another process exits 75 (EX_TEMPFAIL: try again later); Ctrl-C exits 130.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import click

from agent.daemon.privileges import drop_to_store_owner
from agent.errors import EdgetuneError, StoreBusy
from agent.settings import Settings

__all__ = ["EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_TEMPFAIL", "Context", "cli", "main"]

EXIT_ERROR = 1
EXIT_INTERNAL = 70
EXIT_TEMPFAIL = 75  # the store is locked by another process: try again later
EXIT_INTERRUPTED = 130


class Context:
    """What every command gets: the settings parsed once at start-up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_store(self):
        """The device store, opened as the user that owns its folder."""
        from agent.store import Store

        # Root (an updater, an admin on a device) acts as the service user that owns the store's
        # folder: SQLite's -wal/-shm files made by root would lock the daemon out of its store.
        drop_to_store_owner(self.settings.db_path)
        return Store.open(self.settings.db_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", type=click.Path(dir_okay=False), envvar="EDGETUNE_DB",
              help="SQLite store (default: [paths] db of the config file, else "
                   "$XDG_STATE_HOME/edgetune/edgetune.db; env EDGETUNE_DB).")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="edgetune")
@click.pass_context
def cli(ctx: click.Context, db: str | None, debug: bool) -> None:
    """edgetune: on-device kernel autotuning.

    Probe this machine, tune a kernel (compile, verify against a reference, time in an
    isolated worker), and keep every measurement in a local SQLite store.
    """
    settings = Settings.from_environ()
    if db:
        settings = replace(settings, db_path=Path(db))
    ctx.obj = Context(settings)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the status code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    # SIGTERM (systemd, an updater, kill) unwinds like Ctrl-C: the worker is killed and the
    # tuning session is marked interrupted, with every committed run kept.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="edgetune",
                        standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("edgetune: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreBusy as exc:
        click.echo(f"edgetune: error: {exc} (try again later)", err=True)
        sys.exit(EXIT_TEMPFAIL)
    except EdgetuneError as exc:
        click.echo(f"edgetune: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("edgetune: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        click.echo(f"edgetune: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                   err=True)
        sys.exit(EXIT_INTERNAL)
    return 0
