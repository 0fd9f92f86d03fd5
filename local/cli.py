"""The `doclane` command."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import httpx

from doclane.functions.errors import ConfigError
from doclane.functions.settings import load as load_settings


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"doclane: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--data-dir", type=click.Path(path_type=Path), help="State of the embedded defaults [DOCLANE_DATA_DIR, ./.doclane]")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None):
    """doclane: drop documents in a bucket, find them parsed, classified and indexed."""
    ctx.obj = {"data_dir": data_dir}


def _settings(ctx: click.Context, **overrides):
    return load_settings(data_dir=ctx.obj.get("data_dir"), **overrides)


@main.command()
@click.option("--inbox", type=click.Path(path_type=Path), help="Folder bucket to watch [DOCLANE_INBOX, ./inbox]")
@click.option("--port", type=int, help="HTTP port [DOCLANE_PORT, 8080]")
@click.option("--host", help="HTTP address [DOCLANE_HOST, 127.0.0.1]")
@click.option("--webhook", "webhooks", multiple=True, help="Register a webhook URL (repeatable)")
@click.option("--in-process", is_flag=True, help="Run functions as threads in this process (tests)")
@click.option("--quiet", is_flag=True, help="No live progress on the console")
@click.pass_context
def up(ctx, inbox, port, host, webhooks, in_process, quiet):
    """Run the whole pipeline on this machine."""
    from doclane.local.up import Runtime, install_signal_handlers

    from doclane.functions.observability import logs

    logs.configure(logging.WARNING)  # DOCLANE_LOG_FORMAT=json for a log pipeline
    settings = _settings(ctx, inbox=inbox, port=port, host=host)
    try:
        runtime = Runtime(settings, in_process=in_process, webhooks=webhooks)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {settings.host}:{settings.port}: {exc.strerror}; "
                          "pass --port or set DOCLANE_PORT") from None
    install_signal_handlers(runtime)
    bucket = f"bucket: s3://{settings.s3_bucket} at {settings.s3_endpoint_url or 'AWS S3'}" if settings.s3 \
        else f"inbox: {settings.inbox.resolve()}"
    click.echo(f"doclane is up: {runtime.url}  ({bucket}, data: {settings.data_dir.resolve()})")
    click.echo(f"  {'put files into the bucket' if settings.s3 else 'drop files into the inbox'}, then: doclane search \"your words\"   or   curl '{runtime.url}/search?q=...'")
    if runtime.webhook_secret:
        click.echo(f"  webhooks are signed with {runtime.webhook_secret}")
    if runtime.first_key:
        click.echo(f"  first admin key (shown once; log in at {runtime.url}/login, or send it as "
                   f"Authorization: Bearer): {runtime.first_key}")
    sys.stdout.flush()
    runtime.run(console=not quiet)


def _api(settings, path: str, **params):
    """Ask the running doclane; None when nothing listens."""
    url = f"http://{settings.host}:{settings.port}{path}"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        resp = httpx.get(url, params={k: v for k, v in params.items() if v is not None}, headers=headers, timeout=60)
    except httpx.TransportError:
        return None
    if resp.status_code == 401:
        return None  # no key for the server: this machine can read the data directly
    if resp.status_code >= 400:
        detail = resp.json().get("detail") if resp.headers.get("content-type", "").endswith("json") else resp.text
        raise click.ClickException(f"{resp.status_code}: {detail}")
    return resp.json()


@main.command()
@click.argument("query")
@click.option("--mode", type=click.Choice(["hybrid", "keyword", "semantic"]), default="hybrid")
@click.option("--category")
@click.option("--limit", type=int, default=10)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer")
@click.pass_context
def search(ctx, query, mode, category, limit, as_json):
    """Search the indexed documents."""
    settings = _settings(ctx)
    result = _api(settings, "/search", q=query, mode=mode, category=category, limit=limit)
    if result is None:  # nobody serving: read the embedded index directly
        from doclane.functions import search as search_fn
        from doclane.functions.context import Context

        result = search_fn.run(Context(settings), query, mode=mode, category=category, limit=limit)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    click.echo(f"{result['total']} documents ({mode})")
    for i, hit in enumerate(result["results"], 1):
        fields = ", ".join(f"{k}={v.get('value') if isinstance(v, dict) else v}" for k, v in list(hit["fields"].items())[:4])
        snippet = hit["snippet"].replace("<mark>", "\033[1m").replace("</mark>", "\033[0m").replace("\n", " ")
        click.echo(f"{i:>2}. {hit['filename']}  [{hit['category']}]  {hit['score']:.3f}")
        if fields:
            click.echo(f"    {fields}")
        click.echo(f"    {snippet[:200]}")


@main.command()
@click.argument("document_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx, document_id, as_json):
    """Counts by status and category, or one document's status and history."""
    settings = _settings(ctx)
    path = f"/documents/{document_id}" if document_id else "/stats"
    result = _api(settings, path)
    if result is None:
        from dataclasses import asdict

        from doclane.functions.context import Context
        from doclane.functions.status import document_view

        c = Context(settings)
        result = document_view(c, document_id) if document_id else c.metadata.stats()
        if result is None:
            raise click.ClickException(f"no document {document_id}")
    click.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))


@main.group()
def schemas():
    """The event schema registry."""


@schemas.command("list")
def schemas_list():
    from doclane.events.registry import REGISTRY

    for spec in REGISTRY:
        click.echo(f"{spec.type:45} {spec.description}")


@schemas.command("show")
@click.argument("type_")
def schemas_show(type_):
    from doclane.events.registry import REGISTRY, render_schema

    try:
        spec = REGISTRY.get(type_) if type_ in REGISTRY else REGISTRY.latest(type_)
    except KeyError as exc:
        raise click.ClickException(str(exc).strip("'\""))
    click.echo(render_schema(spec.json_schema()), nl=False)


@schemas.command("export")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="Where to write (default: events/schemas)")
def schemas_export(directory):
    from doclane.events.registry import REGISTRY, SCHEMA_DIR

    for path in REGISTRY.export(directory or SCHEMA_DIR):
        click.echo(str(path))


@main.group()
def keys():
    """API keys for the HTTP API and the dashboard (stored hashed)."""


def _keys(ctx):
    from doclane.functions.adapters.metadata import open_metadata
    from doclane.functions.adapters.sql_keys import ApiKeys

    settings = _settings(ctx)
    return ApiKeys(open_metadata(settings.database_url or str(settings.metadata_path)))


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage webhooks and post events")
@click.pass_context
def keys_create(ctx, name, admin):
    """Make a key; it is printed once, only its hash is kept."""
    try:
        rec, key = _keys(ctx).create(name, "admin" if admin else "user")
    except ValueError as exc:
        raise click.UsageError(str(exc))
    click.echo(f"{key}\n  id {rec.id}, {rec.role}: keep it now, it cannot be shown again")


@keys.command("list")
@click.pass_context
def keys_list(ctx):
    for k in _keys(ctx).list():
        state = f"revoked {k.revoked_at[:19]}" if k.revoked_at else f"last used {(k.last_used_at or 'never')[:19]}"
        click.echo(f"{k.id}  {k.prefix}…  {k.role:5}  {k.name}  (created {k.created_at[:19]}, {state})")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx, key_id):
    """Revoke at once: requests and dashboard sessions with it get 401."""
    store = _keys(ctx)
    if store.get(key_id) is None:
        raise click.ClickException(f"no key {key_id} (see doclane keys list)")
    click.echo(f"{key_id}: {'revoked' if store.revoke(key_id) else 'was already revoked'}")


@main.command()
@click.argument("document_ids", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed document (= --status failed)")
@click.option("--status", help="Documents with this status (uploaded, classified, extracted, indexed, failed)")
@click.option("--category", help="Documents of this category")
@click.option("--since", help="Created at or after: ISO 8601 (2024-05-01, 2024-05-01T09:00Z) or ago (30m, 2h, 7d)")
@click.option("--until", help="Created before: ISO 8601 or ago")
@click.option("--dead-letters", "dead_letters", is_flag=False, flag_value="*", default=None, metavar="[FUNCTION]",
              help="Replay the bus's dead letters (of one function, or all) and take them off the dead-letter queue")
@click.option("--dry-run", is_flag=True, help="Only list what would be reprocessed")
@click.pass_context
def reprocess(ctx, document_ids, all_failed, status, category, since, until, dead_letters, dry_run):
    """Run documents through the pipeline again: by id, and/or by status,
    category and creation time (filters combine with AND); or replay dead letters."""
    from doclane.functions.context import Context
    from doclane.functions.reprocess import Selection, parse_time, run
    from doclane.functions.runtime import triggers

    if all_failed and status not in (None, "failed"):
        raise click.UsageError("--failed is --status failed; pass one of them")
    try:
        selection = Selection(tuple(document_ids), status="failed" if all_failed else status, category=category,
                              since=parse_time(since) if since else None, until=parse_time(until) if until else None,
                              dead_letters=dead_letters)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if selection.empty:
        raise click.UsageError("name document ids, or select with --failed/--status/--category/--since/--until, "
                               "or pass --dead-letters")
    c = Context(_settings(ctx))
    try:
        c.bus.declare(triggers(c.settings))
        result = run(c, selection, dry_run=dry_run)
    finally:
        c.close()
    for doc_id, outcome in result.documents:
        click.echo(f"{doc_id}: {outcome}")
    for dl in result.dead_letters:
        why = f" (dead after {dl['attempts']} attempts: {dl['reason']})" if dry_run else ""
        click.echo(f"dead letter {dl['trigger']} {dl['event_id']} ({dl['type'] or '?'}, {dl['subject'] or '-'}): "
                   f"{dl['outcome']}{why}")
    if dry_run:
        click.echo(f"{result.count} would be reprocessed (dry run: nothing was sent)")
    else:
        click.echo(f"{result.count} sent through the pipeline again")


@main.command()
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds each check may take")
@click.pass_context
def doctor(ctx, timeout):
    """Check every configured system (and the embedded defaults); exit 1 if one fails."""
    from doclane.local import doctor as checks

    lines = checks.run(_settings(ctx), timeout=timeout)
    for line in lines:
        click.echo(line.render())
    sys.exit(1 if checks.failed(lines) else 0)


@main.command()
@click.argument("function")
@click.option("--port", type=int, help="Port of /healthz for the platform's probes; 0 for none [DOCLANE_PORT, 8080]")
@click.option("--host", help="Address of /healthz [DOCLANE_HOST]")
@click.pass_context
def worker(ctx, function, port, host):
    """Consume FUNCTION's queue until stopped: the container of a worker
    Deployment (infra/helm). Never exits for being idle: KEDA or an HPA sets
    the replica count. SIGTERM finishes the event in hand."""
    from doclane.functions.runtime import STAGES
    from doclane.local.worker import _log_format, run

    if function not in STAGES:
        raise ConfigError(f"no function {function!r}; functions: {', '.join(STAGES)}")
    from doclane.functions.observability import logs

    logs.configure(logging.INFO, text_format=_log_format(function))
    settings = _settings(ctx)
    run(function, host=host or settings.host, port=settings.port if port is None else port, settings=settings)


@main.command()
@click.pass_context
def declare(ctx):
    """Create the event bus's exchanges and queues (idempotent). Run it before
    anything publishes, e.g. as an init container (infra/helm)."""
    from doclane.functions.context import Context
    from doclane.functions.runtime import triggers

    settings = _settings(ctx)
    context = Context(settings)
    try:
        context.bus.declare(triggers(settings))
    finally:
        context.close()
    if settings.bus_kind == "http":
        click.echo(f"nothing to declare: the broker at {settings.broker_ingress} routes by its Triggers "
                   "(infra/knative/triggers.yaml)")
        return
    where = {"rabbitmq": f"RabbitMQ broker {settings.broker}", "redis": f"Redis Streams broker {settings.broker}",
             "sqlite": "the SQLite bus"}[settings.bus_kind]
    click.echo(f"declared {len(triggers(settings))} triggers on {where}")


from doclane.local.bench import bench  # noqa: E402  (light: imports its work lazily)
from doclane.local.eval.commands import eval_group  # noqa: E402

main.add_command(eval_group)
main.add_command(bench)


if __name__ == "__main__":
    main()
