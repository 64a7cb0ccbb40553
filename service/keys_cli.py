"""``flask --app wsgi keys ...``: create, list and revoke API keys.

They edit the file named by ``SERVICE_API_KEYS_FILE`` (see ``service.keyring``),
which a running service reads again within a second of a change: no restart.
"""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup

from service.keyring import KeyFileError, add_client, clients, remove_client
from service.state import state

keys = AppGroup("keys", help="Create, list and revoke the API keys in SERVICE_API_KEYS_FILE.")


def _keys_file() -> Path:
    path = state().settings.api_keys_file
    if path is None:
        raise click.ClickException("SERVICE_API_KEYS_FILE is not set: name the file that holds the keys")
    return path


def _model_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("name one model or more, separated by commas")
    return names


@keys.command("create")
@click.argument("name")
@click.option("--models", callback=_model_list, help="Limit the key to these models (a,b); default: all.")
def create(name: str, models: list[str] | None) -> None:
    """Make a key for client NAME, store its SHA-256, and print the key (only this once)."""
    path = _keys_file()
    try:
        key = add_client(path, name, models)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(key)
    click.echo(
        f"Client {name!r} added to {path}"
        + (f", for models {', '.join(models)}" if models else ", for every model")
        + ". The key is shown only now: the file keeps its hash.",
        err=True,
    )


@keys.command("list")
def list_keys() -> None:
    """List the clients that have a key, and the models each may call."""
    path = _keys_file()
    try:
        found = clients(path)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    if not found:
        click.echo(f"{path}: no keys")
    for client in found:
        click.echo(f"{client.name:<24} {', '.join(sorted(client.models)) if client.models else 'all models'}")


@keys.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Remove client NAME's key; the service refuses it within a second."""
    path = _keys_file()
    try:
        removed = remove_client(path, name)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    if not removed:
        raise click.ClickException(f"no client named {name!r} in {path}")
    click.echo(f"The key of client {name!r} is revoked.")
