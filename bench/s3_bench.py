"""S3 benchmark: throughput and small-object ops/s next to this machine's limits.

    python bench/s3_bench.py [--quick] [--fsync on|off|both] [--out results.json]
    python bench/s3_bench.py --endpoint URL --access-key ID --secret-key S [--server-pid PID]
    python bench/s3_bench.py --compare peer.json       # Granary, with ratios to another run
    python bench/s3_bench.py --scaling                 # Granary on 1 core, then 2 cores

Without --endpoint it starts its own `granary server` (temp folder, free ports
on 127.0.0.1) per setting and stops it. See bench/README.md for how to read
the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import machine
import uvloop
from compare import add_peer_ratios, load_peer
from loadgen import keep_freed_memory
from proc_watch import ProcessWatch
from reference_get import add_reference_ratios, reference_server, write_file
from report import publish, render, size_label
from scaling import cpu_split, run_scaling, scaling_rows
from server_process import ServerProcess, new_credentials
from targets import targets
from workload import MIB, Endpoint, FloorProbe, Plan, reference_gets, run_load

GIB = 1 << 30
FULL = Plan((MIB, 64 * MIB, GIB), 6.0, 3.0, GIB, 512 * MIB, 4.0, 60.0)
QUICK = Plan((MIB, 64 * MIB), 2.0, 1.5, 256 * MIB, 256 * MIB, 2.0, 15.0)
FSYNC_SETTINGS = {"on": (True,), "off": (False,), "both": (True, False)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter phases")
    parser.add_argument("--out", type=Path, help="also save the results as JSON here")
    parser.add_argument("--dir", type=Path, help="parent of the temp folder (default: $TMPDIR)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument(
        "--profile", type=Path, help="py-spy every phase into DIR (slows the server)"
    )
    parser.add_argument(
        "--fsync",
        choices=FSYNC_SETTINGS,
        help="Granary's metadata_fsync and data_fsync; both (default): the load once each",
    )
    parser.add_argument("--scaling", action="store_true", help="only the 1-core/2-core runs")
    parser.add_argument(
        "--s3-processes",
        default="1",
        help='Granary\'s s3_processes (a number or "auto"); --scaling runs one per core',
    )
    parser.add_argument("--compare", type=Path, help="--out JSON of another run: vs peer ratios")
    endpoint = parser.add_argument_group("any S3 endpoint (no server started)")
    endpoint.add_argument("--endpoint", help="S3 endpoint URL, e.g. http://127.0.0.1:9000")
    endpoint.add_argument("--access-key", help="access key id")
    endpoint.add_argument("--secret-key", help="secret access key")
    endpoint.add_argument("--region", default="us-east-1", help="SigV4 region")
    endpoint.add_argument("--bucket", default="bench", help="bucket (created if missing)")
    endpoint.add_argument(
        "--server-pid",
        action="append",
        default=[],
        help="pid(s) of the local server whose CPU and RSS to report (repeat or comma-separate)",
    )
    args = parser.parse_args(argv)
    _check(parser, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations that would silently measure something else than asked."""
    pids = [pid.strip() for given in args.server_pid for pid in given.split(",") if pid.strip()]
    if not all(pid.isdigit() for pid in pids):
        parser.error(f"--server-pid takes process ids, got {', '.join(args.server_pid)}")
    args.server_pids = [int(pid) for pid in pids]
    if args.endpoint:
        if not (args.access_key and args.secret_key):
            parser.error("--endpoint needs --access-key and --secret-key")
        if args.scaling or args.fsync:
            parser.error("--scaling and --fsync apply to the Granary started by the bench")
        if args.profile and not args.server_pids:
            parser.error("--profile needs --server-pid with --endpoint")
    elif args.server_pids or args.access_key or args.secret_key:
        parser.error("--server-pid, --access-key and --secret-key go with --endpoint")
    if args.scaling and (args.compare or args.profile):
        parser.error("--compare and --profile go with the normal phases, not --scaling")
    missing = [pid for pid in args.server_pids if not Path(f"/proc/{pid}").exists()]
    if missing:
        parser.error(f"no process with pid {', '.join(map(str, missing))}")
    args.fsync = args.fsync or "both"


def split_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """Server on the first allowed core, the load generator on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def s3_processes_setting(value: str) -> int | str:
    return value if value == "auto" else int(value)


def fsync_label(setting: bool) -> str:
    return f"fsync {'on' if setting else 'off'}"


def granary_sets(
    args: argparse.Namespace,
    root: Path,
    plan: Plan,
    limits: dict[str, float],
    prefix: str,
    cpus: tuple[set[int] | None, set[int] | None],
) -> tuple[list[dict], str]:
    """The load against a fresh Granary per fsync setting, pinned to `cpus` (server's,
    client's: this process is already on the client's); the result sets and the pinning."""
    server_cpus, client_cpus = cpus
    result_sets = []
    for setting in FSYNC_SETTINGS[args.fsync]:
        label = fsync_label(setting)
        folder = root / label.replace(" ", "-")
        settings = {
            "metadata_fsync": setting,
            "data_fsync": setting,
            "s3_processes": s3_processes_setting(args.s3_processes),
        }
        server = ServerProcess(folder, new_credentials(), server_cpus, settings)
        endpoint = Endpoint(server.endpoint, server.key_id, server.secret, args.bucket, prefix)
        profile = args.profile / label.replace(" ", "-") if args.profile else None
        try:
            server.start()
            print(f"{label}: server pid {server.pid}; running phases", file=sys.stderr)
            if profile:
                profile.mkdir(parents=True, exist_ok=True)
            probe = FloorProbe(limits, folder, server.counter)
            load = uvloop.run(run_load(endpoint, server, plan, probe, profile))
        finally:
            exit_code = server.stop()
        load["server"]["exit_code"] = exit_code
        result_sets.append({"label": label, "fsync": setting, "server_watched": True} | load)
        shutil.rmtree(folder, ignore_errors=True)
    pinning = (
        f"server pinned to {sorted(server_cpus)}, client to {sorted(client_cpus or [])}"
        if server_cpus
        else "server and client unpinned"
    )
    return result_sets, pinning


def endpoint_set(
    args: argparse.Namespace, root: Path, plan: Plan, limits: dict[str, float], prefix: str
) -> dict:
    """The load against the given endpoint, its server watched if pids were given."""
    endpoint = Endpoint(
        args.endpoint, args.access_key, args.secret_key, args.bucket, prefix, args.region
    )
    watch = ProcessWatch(args.server_pids) if args.server_pids else None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    load = uvloop.run(run_load(endpoint, watch, plan, FloorProbe(limits, root), args.profile))
    return {
        "label": f"endpoint {args.endpoint}",
        "fsync": None,
        "server_watched": bool(watch),
    } | load


def scaling_sets(args: argparse.Namespace, root: Path, plan: Plan) -> tuple[list[dict], str]:
    """--scaling for each fsync setting; the results and how the client was placed."""
    cpus, client_cpus = cpu_split()
    if len(cpus) < 2:
        return [], f"scaling skipped: {len(cpus)} CPU allowed, 2 needed"
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
        client = f"client pinned to {sorted(client_cpus)}"
    else:
        client = "client unpinned: on 2 CPUs it shares the server's cores"
    results = []
    for setting in FSYNC_SETTINGS[args.fsync]:
        label = fsync_label(setting)
        print(f"scaling, {label}", file=sys.stderr)
        settings = {"metadata_fsync": setting, "data_fsync": setting}
        folder = root / f"scaling-{label.replace(' ', '-')}"
        by_cores = run_scaling(folder, settings, args.bucket, plan.scaling_seconds)
        shutil.rmtree(folder, ignore_errors=True)
        results.append({"label": label, "client": client, "rows": scaling_rows(by_cores)})
    return results, f"server pinned to {cpus[:1]}, then {cpus[:2]}; {client}"


def measure_reference_gets(root: Path, plan: Plan, server_cpus: set[int] | None) -> list[dict]:
    """The GET phases against bench/reference_get.py, pinned as the server will be."""
    print("measuring GETs from the reference server...", file=sys.stderr)
    path = root / "reference-object"
    write_file(path, max(plan.sizes))
    try:
        with reference_server(path, server_cpus) as (url, pid):
            return uvloop.run(reference_gets(url, ProcessWatch([pid]), plan.sizes, plan.seconds))
    finally:
        path.unlink()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace, root: Path) -> dict:
    plan = QUICK if args.quick else FULL
    peer, peer_description = load_peer(args.compare) if args.compare else (None, "")
    began, loadavg_before = time.monotonic(), loadavg()
    # Before the limits too: the hash and zstd probes then reuse freed buffers, as
    # the server does (tune_malloc), instead of faulting in fresh pages each round.
    keep_freed_memory()
    print("measuring machine limits...", file=sys.stderr)
    limits = machine.measure(root, plan.loopback_bytes, plan.disk_bytes)
    prefix = f"run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}/"
    results: dict = {"limits": limits}
    info: dict = {}
    settings = " then ".join(map(fsync_label, FSYNC_SETTINGS[args.fsync]))
    if args.scaling:
        results["scaling"], pinning = scaling_sets(args, root, plan)
        against = f"Granary started by the bench, --scaling, {settings}"
    elif args.endpoint:
        results["reference_get"] = measure_reference_gets(root, plan, None)
        results["result_sets"] = [endpoint_set(args, root, plan, limits, prefix)]
        pinning = "server and client unpinned (endpoint mode)"
        pids = ", ".join(map(str, args.server_pids)) or "none (CPU and RSS not reported)"
        against = f"{args.endpoint}, bucket {args.bucket}, keys under {prefix}; server pids {pids}"
    else:
        cpus = split_cpus(not args.no_pin)
        if cpus[1]:
            os.sched_setaffinity(0, cpus[1])
        results["reference_get"] = measure_reference_gets(root, plan, cpus[0])
        results["result_sets"], pinning = granary_sets(args, root, plan, limits, prefix, cpus)
        against = f"Granary started by the bench, {settings}"
    for result_set in results.get("result_sets", []):
        add_reference_ratios(result_set, results["reference_get"])
        info["verified"] = ", ".join(map(size_label, result_set.pop("verified")))
        if peer is not None:
            add_peer_ratios(result_set, peer)
            info["compared_with"] = peer_description
        result_set["targets"] = [
            dataclasses.asdict(t) | {"met": t.met}
            for t in targets(result_set, limits, peer is not None)
        ]
    results["run"] = info | {
        "quick": args.quick,
        "against": against,
        "seconds": time.monotonic() - began,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "pinning": pinning,
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="granary-bench-", dir=args.dir))
    try:
        results = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    publish(render(results), results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
