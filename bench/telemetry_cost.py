"""What metrics and traces cost: the same load against one node with no metrics
backend bound, with metrics (the default), with metrics and every request
traced (OTLP/gRPC to a collector that discards what it receives), and with
one request in ten traced, in alternating rounds. Each variant is compared
with the others of the same round (a VM drifts by several per cent between
rounds: pairing within a round cancels that), and the medians of those ratios
over the rounds are printed: ops/s or MB/s, and the server's CPU time per
operation or per GiB (which the hypervisor's steal does not inflate).

    python bench/telemetry_cost.py [--rounds 5] [--seconds 8] [--dir PATH]

The server runs one S3 process pinned to the first core; wrk (4 KiB PUT and
GET at 16 connections), the Python load generator (64 MiB PUT and GET at 4)
and the collector share the second. The issue's goals: metrics < 3 %,
tracing at 100 % sampling < 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from concurrent import futures
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # not a line per server started (fork)
import grpc
import uvloop
from phases import PhaseRunner
from scaling import cpu_split, small_object_driver
from server_process import ServerProcess, new_credentials
from workload import KIB, MIB, Endpoint, put_then_get
from wrk_load import WrkDriver, wrk_put_then_get

VARIANTS = ("no metrics", "metrics", "traces 100 %", "traces 10 %")
SMALL, LARGE = (4 * KIB, 16), (64 * MIB, 4)
UNBOUND_METRICS = (
    "import granary.telemetry.prometheus as backend; backend.install = lambda: None; "
    "from granary.cli.main import main; main()"
)


class DiscardingCollector:
    """An OTLP/gRPC endpoint that accepts every export and keeps nothing (an empty
    reply is a valid ExportTraceServiceResponse), so the bench measures the
    sender's cost, not a collector's."""

    def __init__(self) -> None:
        self.received_bytes = 0
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        service = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((service,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: object) -> bytes:
        self.received_bytes += len(request)
        return b""

    def close(self) -> None:
        self.server.stop(grace=None)


class BenchServer(ServerProcess):
    def __init__(self, *args: object, bind_metrics: bool, trace: str, **kw) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.bind_metrics = bind_metrics
        self.trace = trace

    def config_text(self) -> str:
        return super().config_text() + self.trace

    def _command(self) -> list[str]:
        if self.bind_metrics:
            return super()._command()
        return [sys.executable, "-c", UNBOUND_METRICS, "-c", str(self.config), "server"]


async def load(server: ServerProcess, wrk: WrkDriver, seconds: float) -> dict[str, float]:
    await asyncio.sleep(1.0)
    endpoint = Endpoint(server.endpoint, server.key_id, server.secret, "bench")
    client = endpoint.client(SMALL[1])
    runner = PhaseRunner(server)
    rates: dict[str, float] = {}
    try:
        await client.create_bucket()
        for phase in await wrk_put_then_get(runner, client, endpoint, wrk, *SMALL, seconds):
            rates[f"4 KiB {phase['name']} c16 ops/s"] = phase["ops_per_s"]
            rates[f"4 KiB {phase['name']} srv ms/op"] = phase["server_cpu_ms_per_op"]
        for phase in await put_then_get(runner, client, *LARGE, seconds):
            rates[f"64 MiB {phase['name']} c4 MB/s"] = phase["mb_per_s"]
            rates[f"64 MiB {phase['name']} srv s/GiB"] = phase["server_cpu_s_per_gib"]
    finally:
        await client.close()
    return rates


def trace_settings(variant: str, port: int) -> str:
    """The [admin] lines of a variant (the config file's last section)."""
    if not variant.startswith("traces"):
        return ""
    ratio = float(variant.split()[1]) / 100
    return f'trace_sink = "http://127.0.0.1:{port}"\ntrace_sampling_ratio = {ratio}\n'


def run_variant(root: Path, variant: str, collector: DiscardingCollector, seconds: float):
    cpus, _ = cpu_split()
    server = BenchServer(
        root,
        new_credentials(),
        {cpus[0]},
        {"s3_processes": 1, "metadata_fsync": False, "data_fsync": False},
        bind_metrics=variant != "no metrics",
        trace=trace_settings(variant, collector.port),
    )
    wrk = small_object_driver(root / "wrk")
    if wrk is None:
        raise SystemExit("telemetry_cost needs wrk (apt-get install wrk)")
    try:
        server.start()
        return uvloop.run(load(server, wrk, seconds))
    finally:
        server.stop()


def paired_median(
    results: dict[str, list[dict[str, float]]], measure: str, variant: str, base: str
) -> float:
    """The median over the rounds of `variant` / `base` measured in the same round."""
    return statistics.median(
        ours[measure] / theirs[measure]
        for ours, theirs in zip(results[variant], results[base], strict=True)
    )


def print_table(results: dict[str, list[dict[str, float]]]) -> None:
    """Medians of each measure, then each variant's cost as paired ratios (in
    brackets for traces: against metrics alone, what tracing adds)."""
    base = VARIANTS[0]
    print(f"{'measure':<24}" + "".join(f"{variant:>22}" for variant in VARIANTS))
    for measure in results[base][0]:
        cells = [f"{statistics.median(r[measure] for r in results[base]):>22.3f}"]
        for variant in VARIANTS[1:]:
            cell = f"{paired_median(results, measure, variant, base) - 1:+.1%}"
            if variant.startswith("traces"):
                cell += f" ({paired_median(results, measure, variant, 'metrics') - 1:+.1%})"
            cells.append(f"{cell:>22}")
        print(f"{measure:<24}" + "".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    collector = DiscardingCollector()
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                rates = run_variant(
                    Path(folder) / f"{round_index}-{VARIANTS.index(variant)}",
                    variant,
                    collector,
                    args.seconds,
                )
                results[variant].append(rates)
                print(f"round {round_index + 1} {variant}: {rates}", file=sys.stderr)
    collector.close()
    print(f"collector received {collector.received_bytes / 1e6:.1f} MB of spans")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
