"""Text for people: the admin API's JSON rendered as tables, sizes and dates.

Pure functions from decoded JSON to lines, so they are unit-testable; the
commands print their result, or the JSON itself with `--json`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def human_size(size: int | None) -> str:
    """Decimal units as operators read disks: 1500000 -> '1.5 MB'."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 999.5 or unit == "PB":  # 999_999 B is '1.0 MB', not '1000 KB'
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_time(ms: int | None) -> str:
    """A timestamp in milliseconds as a UTC date: '2026-12-05 05:07:15 UTC'."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        "  ".join(
            str(cell) if i == len(line) - 1 else str(cell).ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in [headers, *rows]
    ]


def rights(permission: dict) -> str:
    """Garage's RWO column: 'RW ' for read and write, not owner."""
    return "".join(
        letter if permission[name] else " "
        for letter, name in (("R", "read"), ("W", "write"), ("O", "owner"))
    )


def key_info(key: dict) -> list[str]:
    """A key, its secret if the API gave it, and its buckets."""
    secret = key["secret"]
    if secret is None:
        secret = f"(hidden; `granary key info {key['key_id']} --show-secret` shows it)"
    lines = [
        f"Key name:           {key['name'] or '(none)'}",
        f"Key ID:             {key['key_id']}",
        f"Secret key:         {secret}",
        f"Can create buckets: {'yes' if key['allow_create_bucket'] else 'no'}",
        "",
    ]
    if not key["buckets"]:
        return [*lines, "No bucket allowed."]
    rows = [[rights(b), b["name"]] for b in sorted(key["buckets"], key=lambda b: b["name"])]
    return [*lines, "Buckets:", *("  " + line for line in table(["RWO", "Bucket"], rows))]


def key_list(keys: list[dict]) -> list[str]:
    if not keys:
        return ["No access key."]
    rows = [[k["key_id"], k["name"] or ""] for k in sorted(keys, key=lambda k: k["key_id"])]
    return table(["ID", "Name"], rows)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _size(value: int | None) -> str:
    return "?" if value is None else human_size(value)


def bucket_info(bucket: dict, key_names: dict[str, str]) -> list[str]:
    lines = [
        f"Bucket:  {bucket['name']}",
        f"ID:      {bucket['id']}",
        f"Created: {human_time(bucket['created'])}",
    ]
    usage = bucket.get("usage")
    if usage is not None:
        lines += [
            f"Size:    {_size(usage['bytes'])} ({_count(usage['bytes'])} bytes)",
            f"Objects: {_count(usage['objects'])}",
            f"Unfinished multipart uploads: {_count(usage['unfinished_uploads'])}",
        ]
    lines.append("")
    if not bucket["keys"]:
        return [*lines, "No key allowed."]
    rows = [
        [rights(k), k["key_id"], key_names.get(k["key_id"], "")]
        for k in sorted(bucket["keys"], key=lambda k: k["key_id"])
    ]
    return [*lines, "Keys allowed:", *("  " + line for line in table(["RWO", "Key", "Name"], rows))]


def bucket_list(buckets: list[dict]) -> list[str]:
    if not buckets:
        return ["No bucket."]
    rows = [[b["name"], human_time(b["created"]), b["id"]] for b in buckets]
    return table(["Name", "Created", "ID"], rows)


def stats(result: dict) -> list[str]:
    """`granary stats`: cluster totals, then each bucket's usage ('?': no node answered)."""
    redundant = "yes" if result["fully_redundant"] else "NO"
    lines = [
        f"Cluster {result['status']}: {result['nodes_up']}/{result['nodes']} storage nodes up, "
        f"{result['connected_nodes']}/{result['known_nodes']} nodes connected",
        f"Partitions: {result['partitions_all_ok']}/{result['partitions']} with every node up, "
        f"{result['partitions_quorum']}/{result['partitions']} with a quorum",
        f"Fully redundant: {redundant}",
        *(f"  - {reason}" for reason in result["not_fully_redundant_because"]),
        f"Buckets: {result['buckets']}"
        + (
            f" ({result['buckets_unknown']} unknown: no node answered)"
            if result["buckets_unknown"]
            else ""
        ),
        f"Objects: {result['objects']}",
        f"Bytes: {human_size(result['bytes'])} ({result['bytes']} bytes)",
        f"Unfinished multipart uploads: {result['unfinished_uploads']}",
    ]
    if not result["bucket_usage"]:
        return lines
    rows = [
        [
            b["name"],
            _count(b["objects"]),
            _size(b["bytes"]),
            _count(b["unfinished_uploads"]),
        ]
        for b in result["bucket_usage"]
    ]
    return [*lines, "", *table(["Bucket", "Objects", "Size", "Unfinished uploads"], rows)]


def fields(value: object, indent: str = "") -> list[str]:
    """Any JSON object as indented `name: value` lines (for the less common commands)."""
    if isinstance(value, dict):
        lines = []
        for name, item in value.items():
            if isinstance(item, dict | list) and item:
                lines += [f"{indent}{name}:", *fields(item, indent + "  ")]
            else:
                lines.append(f"{indent}{name}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = fields(item, indent + "  ")
                lines += [f"{indent}- {nested[0].lstrip()}", *nested[1:]]
            else:
                lines.append(f"{indent}- {_scalar(item)}")
        return lines
    return [f"{indent}{_scalar(value)}"]


def _scalar(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return "none"
    return str(value)
