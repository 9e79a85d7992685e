"""`assay serve` and `assay keys ...`: commands added to the main CLI by `register(app)`; imports stay light."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from assay.api.settings import Settings
    from assay.api.store import Store

DATA_DIR_HELP = "Folder for the database, uploads and artifacts [env: ASSAY_DATA_DIR; default ./assay-data]."


def register(app: typer.Typer) -> None:
    """Add `serve` and the `keys` group to the main typer app."""
    app.command("serve")(serve)
    keys = typer.Typer(help="Manage API keys (stored hashed in the server's database).", no_args_is_help=True)
    keys.command("add")(keys_add)
    keys.command("list")(keys_list)
    keys.command("remove")(keys_remove)
    app.add_typer(keys, name="keys")


def _store_for(data_dir: Path | None, database_url: str | None) -> tuple[Settings, Store]:
    from assay.api.settings import Settings
    from assay.api.store import Store

    settings = Settings.from_env(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url)
    store.create_schema()
    return settings, store


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind. Anything but loopback needs API keys or --insecure."),
    port: int = typer.Option(8000, help="TCP port."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    database_url: str | None = typer.Option(
        None, "--database-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://... [env: ASSAY_DATABASE_URL; "
                                     "default: SQLite in the data folder]."),
    workers: int | None = typer.Option(
        None, help="Worker processes of the default job pool (curation) [env: ASSAY_WORKERS; default 2]."),
    pool: list[str] = typer.Option(
        [], "--pool", metavar="NAME=N", help="Worker processes of another job pool, e.g. --pool training=1 "
                                             "[env: ASSAY_POOLS=training=1,...; default 1 per pool]."),
    job_timeout: float | None = typer.Option(
        None, "--job-timeout", help="Wall-clock limit of a running job in seconds; past it the job fails with "
                                    "job_timeout [env: ASSAY_JOB_TIMEOUT_S; default 21600; per kind: "
                                    "ASSAY_JOB_TIMEOUTS=fine_tuning=86400,...]."),
    max_upload_mb: float | None = typer.Option(
        None, "--max-upload-mb", help="Upload size limit in MB [env: ASSAY_MAX_UPLOAD_BYTES; default 512 MB]."),
    rate_limit: float | None = typer.Option(
        None, "--rate-limit", help="Requests per second per API key, 0 for none [env: ASSAY_RATE_LIMIT; default 50]."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback interface without API keys."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the REST API (OpenAPI at /openapi.json, docs at /docs) with its job workers."""
    import uvicorn

    from assay.api.app import create_app
    from assay.api.settings import is_loopback

    try:
        settings, store = _store_for(data_dir, database_url)
        max_bytes = int(max_upload_mb * 1024 * 1024) if max_upload_mb is not None else None
        pools = _pool_sizes(pool)
        settings = type(settings).from_env(data_dir=settings.data_dir, database_url=database_url, host=host,
                                           port=port, workers=workers, max_upload_bytes=max_bytes,
                                           rate_limit_per_s=rate_limit, insecure=insecure,
                                           job_timeout_s=job_timeout)
        if pools:
            settings = replace(settings, pool_sizes={**settings.pool_sizes, **pools}).checked()
        has_keys = bool(settings.api_keys) or bool(store.key_hashes())
        store.dispose()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not has_keys and not is_loopback(host):
        if not insecure:
            typer.echo(f"error: refusing to listen on {host} without API keys. Add a key with `assay keys add`, "
                       "set ASSAY_API_KEYS, bind 127.0.0.1, or pass --insecure.", err=True)
            raise typer.Exit(2)
        typer.echo(f"warning: listening on {host} with no API keys: anyone who can reach it can use it.", err=True)
    import logging

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    from assay.api.jobs import JobKindError

    try:
        app = create_app(settings)
    except JobKindError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _pool_sizes(options: list[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for option in options:
        name, sep, count = option.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"--pool takes NAME=N (e.g. training=1), got {option!r}")
        sizes[name.strip()] = int(count)
    return sizes


def keys_add(
    name: str = typer.Option("default", help="A label to recognise the key by."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    database_url: str | None = typer.Option(None, "--database-url", help="SQLAlchemy URL."),
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from assay.api.auth import generate_key, hash_key

    _, store = _store_for(data_dir, database_url)
    key = generate_key()
    row = store.add_key(name, hash_key(key))
    store.dispose()
    typer.echo(f"created key {row['id']} ({name}); store it now, it is not shown again:", err=True)
    typer.echo(key)


def keys_list(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    database_url: str | None = typer.Option(None, "--database-url", help="SQLAlchemy URL."),
) -> None:
    """List stored keys (ids and labels; the keys themselves are not recoverable)."""
    import datetime

    _, store = _store_for(data_dir, database_url)
    for row in store.list_keys():
        created = datetime.datetime.fromtimestamp(row["created_at"], tz=datetime.timezone.utc).isoformat(
            timespec="seconds")
        typer.echo(f"{row['id']}\t{row['name']}\t{created}")
    store.dispose()


def keys_remove(
    key_id: str = typer.Argument(..., help="The key id shown by `assay keys list`."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    database_url: str | None = typer.Option(None, "--database-url", help="SQLAlchemy URL."),
) -> None:
    """Revoke a key (a running server stops accepting it within seconds)."""
    _, store = _store_for(data_dir, database_url)
    removed = store.remove_key(key_id)
    store.dispose()
    if not removed:
        typer.echo(f"error: no key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {key_id}")
