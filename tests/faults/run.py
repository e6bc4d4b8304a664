"""Run the fault suite: a workload and a nemesis against a fresh cluster, then the checker.

    python -m tests.faults.run --mix kill|pause|partition|clock|layout|bitrot|all \\
        [--workload plain|conditional|versioned] [--duration 60] [--seed 1] [--runs 10] \\
        [--threads 4] [--s3-processes 1] [--keep]

The plain workload reads, writes, deletes and lists; the conditional one races
conditional writes (creates and compare-and-set chains, see workload.py) and
adds the checker's conditional-write rule (`check_conditional`); the versioned
one writes, deletes, reads and lists versions in a bucket with versioning
enabled, and adds the checker's version rule (`check_versions`).

Prints the operations by kind and outcome, the faults injected and every
violation; exits 1 if any run had a violation.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

from .checker import (
    Violation,
    check_conditional,
    check_listings,
    check_reads,
    check_versions,
    summary,
)
from .cluster import BLOCK_SIZE, CREDENTIALS, FaultCluster, wait_until
from .history import History, Outcome, Values, block_ids, body_of
from .nemesis import MIXES, Nemesis, make_nemesis
from .workload import (
    BUCKET,
    FROZEN_PREFIX,
    KEYS,
    SWAP_KEYS,
    Client,
    ConditionalWorkload,
    VersionedWorkload,
    Workload,
    created_keys,
    s3_client,
)

FROZEN_KEYS = 10
CLIENT_TIMEOUT = 10.0
FINAL_TIMEOUT = 30.0
HEAL_TIMEOUT = 120.0
SETTLE_SECS = 3.0  # after healing: a few anti-entropy rounds
LAST_STEP_MARGIN = 3.0  # no fault starts this close to the end
SHOWN_VIOLATIONS = 20
VERSION_KINDS = ("vget", "vdelete", "vlist")


class ViolationsFound(AssertionError):
    """A run's history broke the checker's rules (the message is the report)."""


@dataclass
class Result:
    mix: str
    seed: int
    operations: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    root: Path | None = None

    def assert_clean(self) -> None:
        if self.violations:
            raise ViolationsFound(self.report())

    def report(self) -> str:
        lines = [f"== mix {self.mix}, seed {self.seed}"]
        total = sum(self.operations.values())
        lines.append(f"operations: {total}")
        shown = {kind for kind, _ in self.operations} | {"put", "get", "delete", "list"}
        for kind in ("put", "get", "delete", "list", "create", "swap", *VERSION_KINDS):
            if kind not in shown:
                continue
            counts = {o: self.operations[(kind, o)] for o in ("ok", "fail", "unknown")}
            lines.append(f"  {kind:<6} " + "  ".join(f"{o} {n:>5}" for o, n in counts.items()))
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items()))
        lines.append(f"faults: {sum(self.faults.values())} ({faults or 'none'})")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"violations: {len(self.violations)}")
        by_rule = Counter(v.rule for v in self.violations)
        lines += [f"  {rule}: {n}" for rule, n in sorted(by_rule.items())]
        for violation in self.violations[:SHOWN_VIOLATIONS]:
            lines.append(f"  [{violation.rule}] {violation.key}: {violation.detail}")
        if len(self.violations) > SHOWN_VIOLATIONS:
            lines.append(f"  ... and {len(self.violations) - SHOWN_VIOLATIONS} more")
        if self.violations and self.root is not None:
            lines.append(f"the nodes' logs and history.jsonl are in {self.root}")
        return "\n".join(lines)


def create_bucket(cluster: FaultCluster) -> None:
    """Create the bucket (once the default key exists) and wait until every node has it."""
    clients = [s3_client(n.endpoint, CREDENTIALS, timeout=10) for n in cluster.nodes]

    def created() -> bool:
        try:
            clients[0].create_bucket(Bucket=BUCKET)
        except Exception as error:  # the key may not be replicated yet
            return "BucketAlreadyOwnedByYou" in str(error)
        return True

    def everywhere() -> bool:
        try:
            for client in clients:
                client.head_bucket(Bucket=BUCKET)
        except Exception:  # not there yet
            return False
        return True

    wait_until(created, 60, "the bucket to be created")
    wait_until(everywhere, 60, "every node to know the bucket")


def write_frozen(client: Client) -> dict[str, str]:
    """Write the read-only objects (each of several blocks) through the first node."""
    frozen = {}
    for index in range(FROZEN_KEYS):
        value = client.values.next(client.process)
        while len(block_ids(body_of(value), BLOCK_SIZE)) < 2:
            value = client.values.next(client.process)
        key = f"{FROZEN_PREFIX}{index}"
        op = client.put(next(iter(client.clients)), key, value)
        if op.outcome is not Outcome.OK:
            raise RuntimeError(f"could not write {key}: {op.error}")
        frozen[key] = value
    return frozen


def drive(nemesis: Nemesis, duration: float, rng: random.Random) -> None:
    """Inject faults, with quiet gaps, until `duration` seconds have passed."""
    deadline = time.monotonic() + duration
    time.sleep(min(1.0, duration))
    while time.monotonic() < deadline - LAST_STEP_MARGIN:
        nemesis.step()
        time.sleep(min(rng.uniform(1, 3), max(0.0, deadline - time.monotonic())))
    time.sleep(max(0.0, deadline - time.monotonic()))


def enable_versioning(cluster: FaultCluster) -> None:
    """Enable the bucket's versioning and object lock, and wait until every node knows
    them (each decides by the settings as it knows them)."""
    clients = [s3_client(n.endpoint, CREDENTIALS, timeout=10) for n in cluster.nodes]
    config = {"Status": "Enabled"}
    clients[0].put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration=config)
    wait_until(
        lambda: all(
            c.get_bucket_versioning(Bucket=BUCKET).get("Status") == "Enabled" for c in clients
        ),
        60,
        "every node to know the bucket's versioning",
    )
    lock = {"ObjectLockEnabled": "Enabled"}
    clients[0].put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration=lock)

    def locked(client) -> bool:
        try:
            return bool(client.get_object_lock_configuration(Bucket=BUCKET))
        except ClientError:
            return False

    wait_until(lambda: all(locked(c) for c in clients), 60, "every node to know the lock")


def final_version_reads(
    cluster: FaultCluster, history: History, values: Values, written: dict[str, list[str]]
) -> None:
    """List every key's versions on every running node, and read every acknowledged
    version by id, through the nodes in turn; a failed read or listing gets one more
    chance (only the last attempt is recorded, on the history's clock)."""
    endpoints = {n.name: n.endpoint for n in cluster.running}
    reader = Client(-1, endpoints, CREDENTIALS, history, values, timeout=FINAL_TIMEOUT, final=True)
    attempts = History(_t0=history._t0)
    retrier = Client(-2, endpoints, CREDENTIALS, attempts, values, timeout=FINAL_TIMEOUT)
    nodes = list(endpoints)
    for node in nodes:
        for key in written:
            if retrier.list_versions(node, key).outcome is not Outcome.OK:
                time.sleep(1)
            reader.list_versions(node, key)
    turn = 0
    for key, version_ids in written.items():
        for version_id in version_ids:
            node = nodes[turn % len(nodes)]
            turn += 1
            read = retrier.get_version(node, key, version_id)
            if read.outcome is not Outcome.OK:
                time.sleep(1)
                read = retrier.get_version(node, key, version_id)
            history.add(read, final=True)


def final_reads(cluster: FaultCluster, history: History, values: Values, keys: list[str]) -> None:
    """Read every key on every running node; a failed read gets one more chance."""
    endpoints = {n.name: n.endpoint for n in cluster.running}
    reader = Client(-1, endpoints, CREDENTIALS, history, values, timeout=FINAL_TIMEOUT, final=True)
    retrier = Client(-2, endpoints, CREDENTIALS, History(), values, timeout=FINAL_TIMEOUT)
    for node in endpoints:
        for key in keys:
            if retrier.get(node, key).outcome is not Outcome.OK:
                time.sleep(1)
            reader.get(node, key)


def run_mix(
    mix: str,
    duration: float,
    seed: int,
    root: Path,
    *,
    threads: int = 4,
    s3_processes: int = 1,
    workload: str = "plain",
    log=print,
) -> Result:
    """`s3_processes`: the S3 processes of each node; `workload`: plain, conditional or
    versioned."""
    rng = random.Random(seed)
    result = Result(mix, seed, root=root)
    values = Values(seed)
    spare = 1 if mix in ("layout", "all") else 0
    cluster = FaultCluster(root, spare=spare, s3_processes=s3_processes)
    try:
        log(f"[{mix}] starting {len(cluster.nodes)} nodes in {root}")
        cluster.start()
        create_bucket(cluster)
        history = History()
        nemesis = make_nemesis(mix, cluster, history, rng)
        endpoints = {n.name: n.endpoint for n in cluster.nodes}
        setup = Client(100, endpoints, CREDENTIALS, history, values, timeout=FINAL_TIMEOUT)
        frozen = write_frozen(setup)
        nemesis.prepare(setup, frozen)
        conditional = workload == "conditional"
        if conditional:
            _write_first_values(setup, SWAP_KEYS)
        if workload == "versioned":
            enable_versioning(cluster)
        kinds = {"conditional": ConditionalWorkload, "versioned": VersionedWorkload}
        clients = kinds.get(workload, Workload)(
            endpoints,
            CREDENTIALS,
            history,
            values,
            keys=KEYS,
            read_only_keys=list(frozen),
            threads=threads,
            seed=seed,
            timeout=CLIENT_TIMEOUT,
        )
        log(f"[{mix}] {workload} workload and nemesis for {duration:.0f}s")
        clients.start()
        try:
            drive(nemesis, duration, rng)
        finally:
            clients.stop(timeout=CLIENT_TIMEOUT + 5)
        log(f"[{mix}] healing")
        cluster.heal()
        try:
            cluster.wait_healthy(HEAL_TIMEOUT)
        except TimeoutError as error:
            result.violations.append(Violation("heal", None, str(error)))
        time.sleep(SETTLE_SECS)
        nemesis.finish()
        log(f"[{mix}] final reads")
        if isinstance(clients, VersionedWorkload):
            final_reads(cluster, history, values, list(frozen))
            final_version_reads(cluster, history, values, clients.written)
        else:
            keys = [*SWAP_KEYS, *created_keys(history.ops)] if conditional else KEYS
            final_reads(cluster, history, values, [*keys, *frozen])
        log(f"[{mix}] checking")
        history.dump(root / "history.jsonl")
        _judge(result, history, nemesis, cluster)
        if conditional:
            result.violations += check_conditional(history.ops)
        if workload == "versioned":
            result.violations += check_versions(history.ops, history.final)
    finally:
        cluster.stop()
    return result


def _write_first_values(client: Client, keys: list[str]) -> None:
    """Give each of `keys` a first value (what the first compare-and-set names)."""
    for key in keys:
        op = client.put(next(iter(client.clients)), key)
        if op.outcome is not Outcome.OK:
            raise RuntimeError(f"could not write {key}: {op.error}")


def _judge(result: Result, history: History, nemesis: Nemesis, cluster: FaultCluster) -> None:
    """Fill in `result`: the counts, the checker's verdict and the notes."""
    result.operations = summary(history.ops)
    result.faults = Counter(f.kind for f in history.faults)
    result.violations += [
        *check_reads(history.ops, history.final),
        *check_listings(history.ops, KEYS),
        *nemesis.violations(),
        *(
            Violation("restart", name, f"{len(failures)} failed start(s), last: {failures[-1]}")
            for name, failures in cluster.start_failures.items()
        ),
    ]
    result.notes = [*history.notes, *nemesis.notes(), *_log_notes(cluster)]
    result.notes += [f"fault at {f.start:.1f}s: {f.detail}" for f in history.faults]


def _log_notes(cluster: FaultCluster) -> list[str]:
    notes = []
    for node in cluster.nodes:
        errors = Counter(_raised(node.log()))
        if errors:
            notes.append(
                f"{node.name}: {sum(errors.values())} traceback(s) in {node.log_file}: "
                + "; ".join(f"{n}x {error[:160]}" for error, n in errors.most_common(3))
            )
    return notes


def _raised(log: str) -> list[str]:
    """The exception line closing each traceback in a log."""
    lines = log.splitlines()
    raised = []
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            rest = (text for text in lines[index + 1 :] if text and not text.startswith(" "))
            raised.append(next(rest, "?"))
    return raised


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", choices=MIXES, required=True)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="runs, with seeds seed, seed+1, ...")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--s3-processes", type=int, default=1, help="S3 processes per node")
    parser.add_argument(
        "--workload", choices=("plain", "conditional", "versioned"), default="plain"
    )
    parser.add_argument("--keep", action="store_true", help="keep the nodes' folders and logs")
    args = parser.parse_args(argv)
    failed = 0
    for run in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix=f"granary-faults-{args.mix}-"))
        try:
            result = run_mix(
                args.mix,
                args.duration,
                args.seed + run,
                root,
                threads=args.threads,
                s3_processes=args.s3_processes,
                workload=args.workload,
            )
        except Exception:  # a broken run counts as failed; the next one may still work
            traceback.print_exc()
            print(f"run {run + 1} (seed {args.seed + run}) broke; logs kept in {root}")
            failed += 1
            continue
        print(result.report(), flush=True)
        failed += bool(result.violations)
        if args.keep and not result.violations:
            print(f"logs kept in {root}")
        elif not result.violations:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{args.runs - failed}/{args.runs} run(s) without violations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
