"""The `granary` command.

`granary server` runs a node. The other commands talk to a running node's
admin API, found from the same config file the server uses (`-c FILE`) or,
without one, from its data folder (`--data DIR`, default ./granary-data),
where the server records its admin endpoint and token. Both options work
before or after the command's name.

Output is text for people; `--json` prints the admin API's JSON for scripts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

from granary import __version__
from granary.cli import render
from granary.cli.admin_client import AdminClient, AdminClientError
from granary.cli.global_options import accept_global_options_everywhere
from granary.config import MAX_S3_PROCESSES, ConfigError, load_config
from granary.telemetry.logs import setup_logging

DEFAULT_DATA = "granary-data"


@click.group()
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="GRANARY_CONFIG_FILE",
    help="TOML config file.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    default=DEFAULT_DATA,
    show_default=True,
    help="Data folder when running without a config file.",
)
@click.version_option(__version__, prog_name="granary")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, data_dir: str) -> None:
    """Granary: a self-hosted, geo-distributed S3-compatible object store."""
    ctx.obj = {"config_file": config_file, "data_dir": data_dir}


def _data_dir(ctx: click.Context) -> Path:
    return Path(ctx.find_root().obj["data_dir"])


def _load(ctx: click.Context):
    config_file = ctx.find_root().obj["config_file"]
    if config_file is None:
        return None
    try:
        return load_config(config_file)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.option(
    "--s3-address",
    default="127.0.0.1:3900",
    show_default=True,
    help="S3 API address without a config file.",
)
@click.option(
    "--admin-address",
    default="127.0.0.1:3903",
    show_default=True,
    help="Admin API address without a config file.",
)
@click.option(
    "--rpc-address",
    default="127.0.0.1:0",
    show_default=True,
    help="RPC address without a config file (port 0: any free port).",
)
@click.option(
    "--s3-processes",
    default="auto",
    show_default=True,
    help='Processes serving S3 without a config file: a number, or "auto" (one per core).',
)
@click.pass_context
def server(
    ctx: click.Context, s3_address: str, admin_address: str, rpc_address: str, s3_processes: str
) -> None:
    """Run a node (a single-node cluster when started without a config file)."""

    import uvloop

    from granary.processes.spawn import fork_workers
    from granary.server import check_process_model, default_config, run_node
    from granary.util.resources import tune_malloc

    try:
        setup_logging()
        config = _load(ctx)
        if config is not None and config.log_format is not None:
            setup_logging(config.log_format)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    default_key = config is None or bool(os.environ.get("GRANARY_ACCESS_KEY_ID"))
    where = _location_options(ctx)
    try:
        if config is None:
            processes = _s3_processes(s3_processes)
            config = default_config(
                _data_dir(ctx), s3_address, admin_address, rpc_address, processes
            )
        tune_malloc()
        check_process_model(config)
        # Before the node opens anything, so that the workers share its pages.
        forked = fork_workers(config.s3_process_count - 1)
        uvloop.run(
            run_node(
                config,
                default_key=default_key,
                announce=lambda n: _announce(n, where),
                forked_workers=forked,
            )
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot start: {error}") from None


def _s3_processes(value: str) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if not value.isdigit() or not 1 <= int(value) <= MAX_S3_PROCESSES:
        raise click.BadParameter(f'1..{MAX_S3_PROCESSES} or "auto"', param_hint="--s3-processes")
    return int(value)


def _location_options(ctx: click.Context) -> str:
    """The options that lead the CLI to this node, for the hints printed at start."""
    config_file = ctx.find_root().obj["config_file"]
    return f"-c {config_file}" if config_file else f"--data {_data_dir(ctx)}"


def _announce(node, where: str) -> None:
    lines = [
        f"Granary {__version__} is running (node {node.node_id.hex()[:16]}).",
        f"  S3 endpoint:    {node.s3_endpoint}",
        f"  region:         {node.config.s3_api.s3_region}",
    ]
    if node.credentials is not None:
        lines.append(f"  access key id:  {node.credentials.key_id}")
        if node.credentials.secret is not None:
            lines.append(f"  secret key:     {node.credentials.secret}")
        else:
            show = f"granary {where} key info {node.credentials.key_id} --show-secret"
            lines.append(
                f"  secret key:     printed when the key was created; show it with\n    {show}"
            )
    lines.append("Stop with Ctrl-C.")
    click.echo("\n".join(lines))
    sys.stdout.flush()


def _client(ctx: click.Context) -> AdminClient:
    config = _load(ctx)
    try:
        return AdminClient.locate(config, _data_dir(ctx))
    except AdminClientError as error:
        raise click.ClickException(str(error)) from None


def _call(ctx: click.Context, method: str, path: str, body: dict | None = None):
    try:
        return _client(ctx).call(method, path, body)
    except AdminClientError as error:
        raise click.ClickException(str(error)) from None


def _show(value) -> None:
    click.echo(json.dumps(value, indent=2))


def _print(lines: list[str]) -> None:
    click.echo("\n".join(lines))


def _output(value, as_json: bool, as_text: Callable[[Any], list[str]]) -> None:
    """The admin API's JSON with `--json`, else its text for people."""
    if as_json:
        _show(value)
    else:
        _print(as_text(value))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


def _show_key(key: dict, as_json: bool) -> None:
    _output(key, as_json, render.key_info)


@main.group()
def key() -> None:
    """Manage access keys."""


@key.command("create")
@click.argument("name", default="")
@click.option(
    "--create-bucket/--no-create-bucket", default=False, help="Allow the key to create buckets."
)
@json_option
@click.pass_context
def key_create(ctx: click.Context, name: str, create_bucket: bool, as_json: bool) -> None:
    """Create a key; prints its id and secret."""
    body = {"name": name, "allow_create_bucket": create_bucket}
    _show_key(_call(ctx, "POST", "/v1/keys", body), as_json)


@key.command("import")
@click.argument("key_id")
@click.argument("secret")
@click.option("-n", "--name", default="")
@click.option("--yes", is_flag=True, help="Accepted for Garage's CLI; nothing is asked.")
@json_option
@click.pass_context
def key_import(
    ctx: click.Context, key_id: str, secret: str, name: str, yes: bool, as_json: bool
) -> None:
    """Create a key with given credentials."""
    body = {"name": name, "key_id": key_id, "secret": secret}
    _show_key(_call(ctx, "POST", "/v1/keys", body), as_json)


@key.command("list")
@json_option
@click.pass_context
def key_list(ctx: click.Context, as_json: bool) -> None:
    keys = _call(ctx, "GET", "/v1/keys")
    _output(keys, as_json, render.key_list)


@key.command("info")
@click.argument("key_id")
@click.option("--show-secret", is_flag=True)
@json_option
@click.pass_context
def key_info(ctx: click.Context, key_id: str, show_secret: bool, as_json: bool) -> None:
    query = "?show_secret=true" if show_secret else ""
    _show_key(_call(ctx, "GET", f"/v1/keys/{key_id}{query}"), as_json)


@key.command("allow")
@click.argument("key_id")
@click.option("--create-bucket", is_flag=True, required=True)
@json_option
@click.pass_context
def key_allow(ctx: click.Context, key_id: str, create_bucket: bool, as_json: bool) -> None:
    """Allow a key to create buckets."""
    _show_key(_call(ctx, "POST", f"/v1/keys/{key_id}", {"allow_create_bucket": True}), as_json)


@key.command("deny")
@click.argument("key_id")
@click.option("--create-bucket", is_flag=True, required=True)
@json_option
@click.pass_context
def key_deny(ctx: click.Context, key_id: str, create_bucket: bool, as_json: bool) -> None:
    """Stop a key from creating buckets."""
    _show_key(_call(ctx, "POST", f"/v1/keys/{key_id}", {"allow_create_bucket": False}), as_json)


@key.command("delete")
@click.argument("key_id")
@yes_option
@click.pass_context
def key_delete(ctx: click.Context, key_id: str, yes: bool) -> None:
    if not yes:
        click.confirm(f"Delete access key {key_id}?", abort=True)
    _call(ctx, "DELETE", f"/v1/keys/{key_id}")
    click.echo(f"deleted {key_id}")


@main.group()
def bucket() -> None:
    """Manage buckets and who may use them."""


def _show_bucket(ctx: click.Context, bucket: dict, as_json: bool) -> None:
    if as_json:
        _show(bucket)
        return
    names = (
        {k["key_id"]: k["name"] for k in _call(ctx, "GET", "/v1/keys")} if bucket["keys"] else {}
    )
    _print(render.bucket_info(bucket, names))


@bucket.command("create")
@click.argument("name")
@json_option
@click.pass_context
def bucket_create(ctx: click.Context, name: str, as_json: bool) -> None:
    _show_bucket(ctx, _call(ctx, "POST", "/v1/buckets", {"name": name}), as_json)


@bucket.command("list")
@json_option
@click.pass_context
def bucket_list(ctx: click.Context, as_json: bool) -> None:
    buckets = _call(ctx, "GET", "/v1/buckets")
    _output(buckets, as_json, render.bucket_list)


@bucket.command("info")
@click.argument("name")
@json_option
@click.pass_context
def bucket_info(ctx: click.Context, name: str, as_json: bool) -> None:
    _show_bucket(ctx, _call(ctx, "GET", f"/v1/buckets/{name}"), as_json)


@bucket.command("delete")
@click.argument("name")
@yes_option
@click.pass_context
def bucket_delete(ctx: click.Context, name: str, yes: bool) -> None:
    if not yes:
        click.confirm(f"Delete bucket {name}?", abort=True)
    _call(ctx, "DELETE", f"/v1/buckets/{name}")
    click.echo(f"deleted {name}")


def _permission_command(grant: bool):
    @click.argument("name")
    @click.option("--key", "key_id", required=True, help="Access key id.")
    @click.option("--read", is_flag=True)
    @click.option("--write", is_flag=True)
    @click.option("--owner", is_flag=True)
    @json_option
    @click.pass_context
    def command(ctx, name, key_id, read, write, owner, as_json):
        action = "allow" if grant else "deny"
        body = {"key_id": key_id, "read": read, "write": write, "owner": owner}
        _show_bucket(ctx, _call(ctx, "POST", f"/v1/buckets/{name}/{action}", body), as_json)

    command.__doc__ = "Give a key rights on a bucket." if grant else "Take rights away."
    return command


bucket.command("allow")(_permission_command(grant=True))
bucket.command("deny")(_permission_command(grant=False))


@main.group()
def node() -> None:
    """This node's identity and its peers."""


@node.command("id")
@click.pass_context
def node_id(ctx: click.Context) -> None:
    """Print ID@HOST:PORT, for other nodes' bootstrap_peers or `node connect`."""
    click.echo(_call(ctx, "GET", "/v1/node/id")["node"])


@node.command("connect")
@click.argument("peer")
@click.pass_context
def node_connect(ctx: click.Context, peer: str) -> None:
    """Connect to another node, given as ID@HOST:PORT."""
    connected = _call(ctx, "POST", "/v1/node/connect", {"peer": peer})["connected"]
    click.echo(f"connected to {connected}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Every node of the cluster, and the cluster's health."""
    result = _call(ctx, "GET", "/v1/status")
    if as_json:
        _show(result)
        return
    health = result["health"]
    click.echo(
        f"Cluster {health['status']}: {health['partitions_with_quorum']}/{health['partitions']} "
        f"partitions with quorum, {health['storage_nodes_up']}/{health['storage_nodes']} "
        f"storage nodes up; layout version {result['layout_version']}"
    )
    if len(result["layout_progress"]["active_versions"]) > 1:
        click.echo(_progress_line(result["layout_progress"]))
    if result["layout_conflict"]:
        click.echo(f"LAYOUT CONFLICT: {result['layout_conflict']}")
    click.echo(
        f"{'id':<16}  {'hostname':<16} {'address':<22} {'zone':<8} {'capacity':>9} "
        f"{'free':>9}  state"
    )
    for item in result["nodes"]:
        capacity = "gateway" if item["gateway"] else render.human_size(item["capacity"])
        click.echo(
            f"{item['id'][:16]:<16}  {(item['hostname'] or '?')[:16]:<16} "
            f"{(item['address'] or '?')[:22]:<22} {(item['zone'] or '-')[:8]:<8} "
            f"{capacity:>9} {render.human_size(item['data_free']):>9}  "
            f"{'up' if item['up'] else 'DOWN'}"
        )


@main.command()
@json_option
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Cluster totals, full redundancy and each bucket's usage (objects, bytes, uploads)."""
    _output(_call(ctx, "GET", "/v1/stats"), as_json, render.stats)


@main.group()
def layout() -> None:
    """Who stores what: stage role changes, then apply them as a new version."""


@layout.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def layout_show(ctx: click.Context, as_json: bool) -> None:
    """The current layout, the staged changes and a preview of their result."""
    result = _call(ctx, "GET", "/v1/layout")
    if as_json:
        _show(result)
    else:
        _print_layout(result)


def _progress_line(progress: dict) -> str:
    """E.g. `Active versions 3,4; read version 3; ack 4: 3/3, sync 4: 2/3, ... nodes`."""
    active = progress["active_versions"]
    newest, nodes = active[-1], len(progress["trackers"])
    done = progress["done"].items()
    counts = ", ".join(f"{name} {newest}: {count}/{nodes}" for name, count in done)
    versions = ",".join(map(str, active))
    return f"Active versions {versions}; read version {progress['read_version']}; {counts} nodes"


def _print_layout(result: dict) -> None:
    click.echo(
        f"Layout version {result['version']} (replication factor "
        f"{result['replication_factor']}, zone redundancy {result['zone_redundancy']})"
    )
    click.echo(_progress_line(result))
    if len(result["active_versions"]) > 1:
        click.echo(f"  {'node':<16}  {'ack':>5} {'sync':>5} {'sync_ack':>8}")
        for node, reached in result["trackers"].items():
            click.echo(
                f"  {node[:16]:<16}  {reached['ack']:>5} {reached['sync']:>5} "
                f"{reached['sync_ack']:>8}"
            )
    for node, role in result["roles"].items():
        capacity = "gateway" if role["capacity"] is None else render.human_size(role["capacity"])
        partitions = result["partitions"].get(node, 0)
        click.echo(
            f"  {node[:16]}  zone={role['zone']:<10} capacity={capacity:<8} partitions={partitions}"
        )
    if result["staged_roles"] or result["staged_zone_redundancy"] is not None:
        click.echo("Staged changes:")
        for node, role in result["staged_roles"].items():
            what = (
                "remove"
                if role is None
                else f"zone={role['zone']} capacity="
                + ("gateway" if role["capacity"] is None else render.human_size(role["capacity"]))
            )
            click.echo(f"  {node[:16]}  {what}")
        if result["staged_zone_redundancy"] is not None:
            click.echo(f"  zone redundancy -> {result['staged_zone_redundancy']}")
        if result["preview"]:
            click.echo(f"Preview of version {result['version'] + 1}:\n{result['preview']}")
        if result["preview_error"]:
            click.echo(f"The staged changes cannot be applied: {result['preview_error']}")
    if result["conflict"]:
        click.echo(f"LAYOUT CONFLICT: {result['conflict']}")


@layout.command("assign")
@click.argument("nodes", nargs=-1, required=True)
@click.option("-z", "--zone", required=True)
@click.option("-c", "--capacity", help="Bytes to store, e.g. 100G.")
@click.option("-t", "--tag", "tags", multiple=True)
@click.option("-g", "--gateway", is_flag=True, help="Store nothing, only serve the APIs.")
@click.pass_context
def layout_assign(ctx, nodes, zone, capacity, tags, gateway) -> None:
    """Stage a role for one or more nodes (ids or unique id prefixes)."""
    body = {
        "nodes": list(nodes),
        "zone": zone,
        "capacity": capacity,
        "tags": list(tags),
        "gateway": gateway,
    }
    _print_layout(_call(ctx, "POST", "/v1/layout/assign", body))


@layout.command("remove")
@click.argument("nodes", nargs=-1, required=True)
@click.pass_context
def layout_remove(ctx, nodes) -> None:
    """Stage the removal of nodes' roles."""
    _print_layout(_call(ctx, "POST", "/v1/layout/remove", {"nodes": list(nodes)}))


@layout.command("config")
@click.option("-r", "--redundancy", required=True, help="Zones per partition, or 'max'.")
@click.pass_context
def layout_config(ctx, redundancy) -> None:
    """Stage the zone redundancy."""
    _print_layout(_call(ctx, "POST", "/v1/layout/config", {"zone_redundancy": redundancy}))


@layout.command("apply")
@click.option(
    "--version",
    "version",
    type=int,
    required=True,
    help="The new version number: the current one plus one.",
)
@click.pass_context
def layout_apply(ctx, version) -> None:
    """Apply the staged changes as a new layout version."""
    result = _call(ctx, "POST", "/v1/layout/apply", {"version": version})
    click.echo(result["report"])
    _print_layout(result)


@layout.command("revert")
@click.pass_context
def layout_revert(ctx) -> None:
    """Forget the staged changes."""
    _print_layout(_call(ctx, "POST", "/v1/layout/revert"))


@layout.command("skip-dead-nodes")
@click.option(
    "--version",
    "version",
    type=int,
    required=True,
    help="Count the nodes that are down as done with this layout version.",
)
@click.option(
    "--allow-missing-data",
    is_flag=True,
    help="Also count them as synced: reads may then miss writes only they held.",
)
@click.pass_context
def layout_skip_dead_nodes(ctx, version, allow_missing_data) -> None:
    """Let a layout change finish without the nodes that are down for good."""
    body = {"version": version, "allow_missing_data": allow_missing_data}
    result = _call(ctx, "POST", "/v1/layout/skip-dead-nodes", body)
    click.echo(f"skipped: {', '.join(node[:16] for node in result['skipped'])}")
    _print_layout(result)


@layout.command("history")
@json_option
@click.pass_context
def layout_history(ctx, as_json: bool) -> None:
    history = _call(ctx, "GET", "/v1/layout/history")
    if as_json:
        _show(history)
        return
    for item in history:
        click.echo(
            f"version {item['version']}: {item['storage_nodes']} storage node(s), "
            f"{item['gateways']} gateway(s), zone redundancy {item['zone_redundancy']}, "
            f"partition size {render.human_size(item['partition_size'])}"
        )


@main.group()
def worker() -> None:
    """This node's background workers and the variables that tune them."""


@worker.command("list")
@json_option
@click.pass_context
def worker_list(ctx: click.Context, as_json: bool) -> None:
    workers = _call(ctx, "GET", "/v1/workers")
    if as_json:
        _show(workers)
        return
    click.echo(f"{'name':<30} {'state':<8} {'queue':>7} {'errors':>6}  last error")
    for item in workers:
        queue = "-" if item["queue_length"] is None else str(item["queue_length"])
        click.echo(
            f"{item['name']:<30} {item['state']:<8} {queue:>7} {item['errors']:>6}  "
            f"{item['last_error'] or ''}"
        )


@worker.command("info")
@click.argument("name")
@json_option
@click.pass_context
def worker_info(ctx: click.Context, name: str, as_json: bool) -> None:
    info = _call(ctx, "GET", f"/v1/workers/{name}")
    _output(info, as_json, render.fields)


@worker.command("get")
@click.argument("variable", required=False)
@click.pass_context
def worker_get(ctx: click.Context, variable: str | None) -> None:
    """Print one variable, or all of them."""
    query = f"?name={variable}" if variable else ""
    for name, value in _call(ctx, "GET", f"/v1/workers/vars{query}").items():
        click.echo(f"{name}\t{value}")


@worker.command("set")
@click.argument("variable")
@click.argument("value")
@click.pass_context
def worker_set(ctx: click.Context, variable: str, value: str) -> None:
    """Set a variable; the node keeps it across restarts (metadata_dir/worker_variables.json)."""
    body = {"name": variable, "value": value}
    for name, new in _call(ctx, "POST", "/v1/workers/vars", body).items():
        click.echo(f"{name}\t{new}")


@main.group()
def block() -> None:
    """Inspect and repair this node's data blocks."""


@block.command("list-errors")
@json_option
@click.pass_context
def block_list_errors(ctx: click.Context, as_json: bool) -> None:
    """Blocks whose resync keeps failing."""
    errors = _call(ctx, "GET", "/v1/blocks/errors")
    if as_json:
        _show(errors)
        return
    click.echo(f"{'hash':<64}  {'rc':>3} {'tries':>5}  {'next try':<23}  last error")
    for item in errors:
        click.echo(
            f"{item['hash']}  {item['refcount']:>3} {item['failures']:>5}  "
            f"{render.human_time(item['next_try_ms']):<23}  {item['last_error']}"
        )


@block.command("info")
@click.argument("hash_", metavar="HASH")
@json_option
@click.pass_context
def block_info(ctx: click.Context, hash_: str, as_json: bool) -> None:
    """A block's count, referencing versions, files and resync state (HASH or a prefix)."""
    info = _call(ctx, "GET", f"/v1/blocks/{hash_}")
    _output(info, as_json, render.fields)


@block.command("retry-now")
@click.argument("hashes", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Retry every failing block.")
@click.pass_context
def block_retry_now(ctx: click.Context, hashes: tuple[str, ...], all_: bool) -> None:
    """Resync blocks at once instead of waiting for their backoff."""
    if all_ == bool(hashes):
        raise click.UsageError("give either --all or some block hashes")
    result = _call(ctx, "POST", "/v1/blocks/retry-now", {"all": all_, "blocks": list(hashes)})
    click.echo(f"{result['queued']} block(s) queued")


@block.command("purge")
@click.argument("hashes", nargs=-1, required=True)
@yes_option
@json_option
@click.pass_context
def block_purge(ctx: click.Context, hashes: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Delete every object using these lost blocks (cannot be undone)."""
    if not yes:
        click.confirm(f"Delete every object that uses {len(hashes)} block(s)?", abort=True)
    result = _call(ctx, "POST", "/v1/blocks/purge", {"blocks": list(hashes)})
    _output(result, as_json, render.fields)


@main.group()
@click.option("--yes", is_flag=True, help="Accepted for Garage's CLI; repairs start at once.")
def repair(yes: bool) -> None:
    """Start repairs on this node."""


@repair.command("blocks")
@click.pass_context
def repair_blocks(ctx: click.Context) -> None:
    """Check every block against the reference counts and the layout (resync)."""
    result = _call(ctx, "POST", "/v1/repair/blocks")
    click.echo(f"{result['queued']} block(s) queued for resync")


@repair.command("rebalance")
@click.pass_context
def repair_rebalance(ctx: click.Context) -> None:
    """Move blocks into their primary data directory (drains read-only ones)."""
    started = _call(ctx, "POST", "/v1/repair/rebalance")["started"]
    click.echo("rebalance started" if started else "a rebalance is already running")


@repair.command("tables")
@click.pass_context
def repair_tables(ctx: click.Context) -> None:
    """Run a full anti-entropy pass of every table now."""
    tables = _call(ctx, "POST", "/v1/repair/tables")["tables"]
    click.echo(f"anti-entropy started for {len(tables)} tables")


@repair.command("scrub")
@click.argument("command", type=click.Choice(["start", "pause", "resume", "cancel"]))
@json_option
@click.pass_context
def repair_scrub(ctx: click.Context, command: str, as_json: bool) -> None:
    """Verify every local block now (start), or pause, resume or cancel the scrub."""
    result = _call(ctx, "POST", "/v1/repair/scrub", {"command": command})
    _output(result, as_json, render.fields)


accept_global_options_everywhere(main)
