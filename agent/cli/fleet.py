"""The ``fleet`` group: run the fleet service, register devices, pull the fleet's data."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.options import fleet_db_option, json_option
from agent.cli.output import print_pull
from agent.cli.root import Context
from agent.errors import ConfigError
from agent.settings import OPERATOR_TOKEN_ENV, RANK_DEADLINE_S, Settings

__all__ = ["fleet", "pull_and_report"]


@click.group()
def fleet() -> None:
    """The fleet service: collects telemetry from devices (needs the fleet extra: pip install edgetune[fleet]).

    Its data lives in a SQLite file or a PostgreSQL database: see --db.
    """




def _fleet_db(settings: Settings, fleet_db: str | None) -> str:
    return fleet_db or str(settings.db_path.parent / "fleet.db")


@fleet.command("serve")
@fleet_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--teacher", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="GGUF model that answers POST /v1/rank, loaded once at start "
                   "(default: edgetune-teacher-q8_0.gguf in EDGETUNE_MODELS, else the shipped models/).")
@click.option("--rank-upstream", metavar="URL", default=None,
              help="Answer POST /v1/rank by asking this OpenAI-compatible server's /v1/completions with logprobs "
                   "instead of the teacher (bearer token from EDGETUNE_FLEET_UPSTREAM_TOKEN).")
@click.option("--rank-upstream-model", metavar="NAME", default=None, help="The model name sent upstream.")
@click.option("--rank-timeout", default=RANK_DEADLINE_S, show_default=True, type=click.FloatRange(0.01, 600),
              help="Seconds one /v1/rank request may take; past them it answers 503 with Retry-After.")
@click.pass_obj
def fleet_serve(obj: Context, fleet_db: str | None, host: str, port: int, teacher: Path | None,
                rank_upstream: str | None, rank_upstream_model: str | None, rank_timeout: float) -> None:
    """Run the fleet service (operator token from EDGETUNE_FLEET_OPERATOR_TOKEN).

    POST /v1/rank, the devices' cloud fallback, is answered by the teacher model, or with
    --rank-upstream by an OpenAI-compatible server.
    """
    token = obj.settings.fleet_operator_token
    if not token:
        raise ConfigError(f"set {OPERATOR_TOKEN_ENV}: the operator token guards the fleet's reads")
    try:
        import uvicorn

        from agent.fleet.app import create_app
    except ImportError as exc:
        raise ConfigError(f"the fleet service needs its extra: install edgetune[fleet] ({exc})") from None
    from agent.fleet.rank import rank_service

    ranking = rank_service(models_dir=obj.settings.models_dir, teacher=teacher, upstream=rank_upstream,
                           upstream_model=rank_upstream_model, upstream_token=obj.settings.fleet_upstream_token,
                           deadline_s=rank_timeout)
    app = create_app(_fleet_db(obj.settings, fleet_db), token, ranking=ranking)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@fleet.command("add-device")
@click.argument("name")
@fleet_db_option
@click.pass_obj
def fleet_add_device(obj: Context, name: str, fleet_db: str | None) -> None:
    """Register device NAME and print its token (shown once; only its hash is kept)."""
    from agent.fleet.storage import FleetStore

    click.echo(FleetStore(_fleet_db(obj.settings, fleet_db)).add_device(name))


@fleet.command("pull")
@click.argument("url")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The dataset folder to write (new, empty, or an older dataset, replaced when complete).")
@click.option("--device", default=None, help="Only this device's runs (its fleet name).")
@click.option("--kernel", default=None, help="Only this kernel's runs.")
@json_option
@click.pass_obj
def fleet_pull(obj: Context, url: str, out_dir: Path, device: str | None, kernel: str | None, as_json: bool) -> None:
    """Fetch the fleet's search-phase runs at URL as a dataset folder (operator token from
    EDGETUNE_FLEET_OPERATOR_TOKEN); `edgetune train DIR` trains on it."""
    pull_and_report(url, out_dir, token=obj.settings.fleet_operator_token or "", as_json=as_json, device=device,
                    kernel=kernel)


def pull_and_report(url: str, out_dir: Path, *, token: str, as_json: bool, **filters: str | None) -> None:
    """Pull the fleet's dataset at ``url`` into ``out_dir`` and say what came."""
    from agent.fleet.pull import pull_dataset

    manifest = pull_dataset(url, token, out_dir, **filters)
    print_pull(url, out_dir, manifest, as_json=as_json)
