"""Faults, one at a time: each `step` injects a fault, holds it while the workload
runs, and undoes it (a wiped disk or a skewed clock stays), recording it in the history.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .checker import Violation
from .cluster import BLOCK_SIZE, FaultCluster, Node, wait_until
from .history import History, Outcome, block_ids, body_of
from .workload import KEYS, Client

QUARANTINE_SUFFIX = ".corrupted"  # what the block store renames a corrupt copy to
SCRUB_TIMEOUT = 60.0
MIN_CLOCK_SKEW_MS = 2_000
MAX_CLOCK_SKEW_MS = 60_000


class Nemesis:
    name = "none"

    def __init__(self, cluster: FaultCluster, history: History, rng: random.Random) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = rng

    def prepare(self, client: Client, frozen: dict[str, str]) -> None:
        """Set up before the workload starts: `client` for the nemesis's own requests,
        `frozen` the read-only keys and their values."""

    def step(self) -> None:
        raise NotImplementedError

    def violations(self) -> list[Violation]:
        """What the nemesis itself saw go wrong (see BitRot)."""
        return []

    def notes(self) -> list[str]:
        """What the nemesis has to say about its faults, for the report."""
        return []

    def finish(self) -> None:
        """After healing, before the final reads: complete what the faults need checked."""

    def _hold(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))

    def _victims(self, count: int = 1) -> list[Node]:
        """Up to `count` random running storage nodes, in distinct zones."""
        running = [node for node in self.cluster.storage if node.running]
        nodes = self.rng.sample(running, len(running))
        chosen: list[Node] = []
        for node in nodes:
            if len(chosen) < count and all(n.zone != node.zone for n in chosen):
                chosen.append(node)
        return chosen


class Kill(Nemesis):
    """SIGKILL one node, or two in different zones, then restart them. The first
    kill, and half the others, strike the first victim in the middle of an upload.
    On nodes with S3 worker processes, the first step and a third of the others
    SIGKILL one worker instead ("kill-worker"): its node's primary restarts it
    and aborts its unfinished uploads."""

    name = "kill"

    def __init__(self, cluster: FaultCluster, history: History, rng: random.Random) -> None:
        super().__init__(cluster, history, rng)
        self.client: Client | None = None
        self.mid_upload_done = False
        self.worker_killed = False

    def prepare(self, client: Client, frozen: dict[str, str]) -> None:
        self.client = client

    def step(self) -> None:
        if self.cluster.start_failures:
            return  # a node that cannot restart stays down: no more kills on top of it
        start = self.history.now()
        running = sum(node.running for node in self.cluster.storage)
        victims = self._victims(min(running - 3, 1 if self.rng.random() < 0.7 else 2))
        if not victims:
            return
        if (not self.worker_killed or self.rng.random() < 1 / 3) and self._kill_a_worker(start):
            self.worker_killed = True
            return
        detail = "SIGKILL+restart " + ",".join(n.name for n in victims)
        if not self.mid_upload_done or self.rng.random() < 0.5:
            key = self.rng.choice(KEYS)
            first = victims[0]
            self.client.interrupted_put(first.name, key, lambda: self.cluster.kill(first))
            self.mid_upload_done = True
            detail += f" ({first.name} while uploading {key})"
        for node in victims:
            self.cluster.kill(node)
        self._hold(1, 4)
        for node in victims:
            self.cluster.revive(node)
        self.history.fault(start, self.name, detail)

    def _kill_a_worker(self, start: float) -> bool:
        running = [node for node in self.cluster.storage if node.running and node.worker_pids()]
        if not running:
            return False
        node = self.rng.choice(running)
        pid = self.rng.choice(node.worker_pids())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._hold(1, 4)
        self.history.fault(start, "kill-worker", f"SIGKILL S3 worker {pid} of {node.name}")
        return True


class Pause(Nemesis):
    """SIGSTOP a node, SIGCONT it a few seconds later."""

    name = "pause"

    def step(self) -> None:
        start = self.history.now()
        [node] = self._victims()
        node.pause()
        self._hold(2, 6)
        node.resume()
        self.history.fault(start, self.name, f"SIGSTOP/SIGCONT {node.name}")


class Partition(Nemesis):
    """Isolate a node, split the cluster in two, or slow one node's links."""

    name = "partition"

    def step(self) -> None:
        start = self.history.now()
        network = self.cluster.network
        choice = self.rng.random()
        if choice < 0.4:
            [node] = self._victims()
            network.isolate(node.name)
            detail = f"isolate {node.name}"
        elif choice < 0.8:
            group = [n.name for n in self.rng.sample(self.cluster.nodes, 2)]
            network.split(group)
            detail = f"split {','.join(group)} | rest"
        else:
            [node] = self._victims()
            delay = self.rng.uniform(0.05, 0.3)
            network.slow(node.name, delay)
            detail = f"delay {node.name}'s links {delay * 1000:.0f} ms each way"
        self._hold(2, 6)
        network.heal()
        self.history.fault(start, self.name, detail)


class Clock(Nemesis):
    """Restart a node (SIGTERM, then start) with its clock shifted by up to a minute
    either way (at least MIN_CLOCK_SKEW_MS), or, after the first time, back to true time."""

    name = "clock"
    skewed = False

    def step(self) -> None:
        start = self.history.now()
        [node] = self._victims()
        offset = self.rng.choice([-1, 1]) * self.rng.randint(MIN_CLOCK_SKEW_MS, MAX_CLOCK_SKEW_MS)
        if self.skewed and self.rng.random() < 0.3:
            offset = 0
        self.skewed = True
        self.cluster.restart(node, clock_offset_ms=offset)
        self._hold(3, 6)
        self.history.fault(start, self.name, f"restart {node.name} with clock {offset:+d} ms")


class Layout(Nemesis):
    """Change the layout through the CLI of a live node while the workload runs:
    add the spare node, remove a node, put a removed one back, change a capacity."""

    name = "layout"

    def step(self) -> None:
        start = self.history.now()
        try:
            version = self.cluster.wait_layout_agreed(30)
        except TimeoutError:
            self.history.note("layout: nodes disagree on the layout, change skipped")
            return
        operator = self.rng.choice(self.cluster.running)
        roles = self.cluster.layout(operator)["roles"]
        try:
            change = self._stage(operator, roles)
            operator.cli("layout", "apply", "--version", str(version + 1))
        except RuntimeError as error:
            self.history.note(f"layout: change refused: {error}")
            with contextlib.suppress(RuntimeError):
                operator.cli("layout", "revert")
            return
        self.history.fault(start, self.name, f"v{version + 1} via {operator.name}: {change}")
        self._hold(3, 6)

    def _stage(self, operator: Node, roles: dict) -> str:
        with_role = [n for n in self.cluster.nodes if n.node_id in roles]
        without = [n for n in self.cluster.nodes if n.node_id not in roles]
        removable = (
            [n for n in with_role if sum(m.zone == n.zone for m in with_role) > 1]
            if len(with_role) > 4
            else []
        )
        choice = self.rng.random()
        if without and (choice < 0.4 or not removable):
            node = self.rng.choice(without)
            operator.cli("layout", "assign", "-z", node.zone, "-c", node.capacity, node.node_id)
            return f"add {node.name} ({node.zone}, {node.capacity})"
        if removable and choice < 0.7:
            node = self.rng.choice(removable)
            operator.cli("layout", "remove", node.node_id)
            return f"remove {node.name}"
        node = self.rng.choice(with_role)
        capacity = self.rng.choice([c for c in ("1G", "2G", "3G") if c != node.capacity])
        node.capacity = capacity
        operator.cli("layout", "assign", "-z", node.zone, "-c", capacity, node.node_id)
        return f"capacity of {node.name} -> {capacity}"


@dataclass
class Corruption:
    node: str
    path: Path
    key: str
    good: bytes  # SHA-256 of the file before the flip
    served: str = ""  # "ok", or what the read through that node returned instead
    found_by: str = ""  # "read", "later", "scrub", "dropped" (deleted unread); "" if not yet
    wiped: bool = False  # its data directory was deleted before it was found

    @property
    def quarantined(self) -> bool:
        return self.path.with_name(self.path.name + QUARANTINE_SUFFIX).exists()

    @property
    def repaired(self) -> bool:
        """A good copy is back in place (fetched again, or refilled after a wipe)."""
        with contextlib.suppress(FileNotFoundError):
            return hashlib.sha256(self.path.read_bytes()).digest() == self.good
        return False


class BitRot(Nemesis):
    """Flip bytes in block files of read-only objects, then read each through the node
    whose copy rotted: the right data must come back (from another replica). Every
    corrupt copy must be found (quarantined as *.corrupted): by that read, by a later
    one, or at the latest by a scrub started at the end. Once per run, wipe a stopped
    node's data directory."""

    name = "bitrot"

    def __init__(self, cluster: FaultCluster, history: History, rng: random.Random) -> None:
        super().__init__(cluster, history, rng)
        self.frozen: dict[str, str] = {}  # key -> value
        self.blocks: dict[bytes, str] = {}  # block id -> key
        self.corruptions: list[Corruption] = []
        self.wiped = False
        self.exhausted = False
        self.client: Client | None = None

    def prepare(self, client: Client, frozen: dict[str, str]) -> None:
        self.client = client
        self.frozen = frozen
        for key, value in frozen.items():
            for block in block_ids(body_of(value), BLOCK_SIZE):
                self.blocks[block] = key

    def step(self) -> None:
        if not self.wiped and len(self.corruptions) >= 2:
            self._wipe()
        else:
            self._corrupt()

    def _wipe(self) -> None:
        start = self.history.now()
        [node] = self._victims()
        self.cluster.stop_node(node)
        self._unfound()  # what the wipe is about to erase
        shutil.rmtree(node.data_dir)
        for corruption in self.corruptions:
            corruption.wiped |= corruption.node == node.name and not corruption.found_by
        self.cluster.revive(node)
        self.wiped = True
        self.history.fault(start, "wipe", f"delete {node.name}'s data directory")

    def _copies(self, block: bytes) -> list[tuple[Node, Path]]:
        hexid = block.hex()
        found = []
        for node in self.cluster.nodes:
            folder = node.data_dir / hexid[:2] / hexid[2:4]
            found += [(node, path) for path in (folder / hexid, folder / f"{hexid}.zst")]
        return [(node, path) for node, path in found if path.exists() and node.running]

    def _corrupt(self) -> None:
        start = self.history.now()
        rotted = {c.path.name.split(".")[0] for c in self.corruptions}
        candidates = [b for b in self.blocks if b.hex() not in rotted]
        self.rng.shuffle(candidates)
        for block in candidates:
            copies = self._copies(block)
            if len(copies) >= 2:
                node, path = self.rng.choice(copies)
                break
        else:
            if not self.exhausted:
                self.history.note("bitrot: no block left with two copies to corrupt")
            self.exhausted = True
            return
        good = path.read_bytes()
        data = bytearray(good)
        for _ in range(self.rng.randint(1, 4)):
            data[self.rng.randrange(len(data))] ^= self.rng.randint(1, 255)
        path.write_bytes(data)
        key = self.blocks[block]
        corruption = Corruption(node.name, path, key, hashlib.sha256(good).digest())
        corruption.served = self._read_through(node, key)
        corruption.found_by = "read" if corruption.quarantined else ""
        self.corruptions.append(corruption)
        self.history.fault(start, self.name, f"flip bytes of {path.name[:16]} on {node.name}")

    def _read_through(self, node: Node, key: str) -> str:
        """Read `key` through `node`; "ok" if its right value came back, else what did."""
        for _ in range(3):
            op = self.client.get(node.name, key)
            if op.outcome is Outcome.OK:
                return "ok" if op.value == self.frozen[key] else f"value {op.value}"
            time.sleep(1)
        return f"error {op.error}"

    def _unfound(self) -> list[Corruption]:
        """The corrupt copies still in place, unnoticed (those found meanwhile are marked)."""
        for c in self.corruptions:
            if not c.found_by and not c.wiped:
                if c.quarantined:
                    c.found_by = "later"
                elif not c.path.exists():
                    c.found_by = "dropped"  # deleted by its node (offloaded), never served
        return [c for c in self.corruptions if not c.found_by and not c.wiped]

    def finish(self) -> None:
        """Scrub the nodes holding corrupt copies no read has found yet."""
        unfound = self._unfound()
        for name in sorted({c.node for c in unfound}):
            self.cluster.node(name).cli("repair", "scrub", "start")
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: all(c.quarantined for c in unfound), SCRUB_TIMEOUT, "the scrub")
        for c in unfound:
            c.found_by = "scrub" if c.quarantined else ""

    def notes(self) -> list[str]:
        if not self.corruptions:
            return []
        found = Counter(c.found_by or "nobody" for c in self.corruptions if not c.wiped)
        wiped = sum(c.wiped for c in self.corruptions)
        repaired = sum(c.repaired for c in self.corruptions)
        return [
            f"bitrot: {len(self.corruptions)} copies corrupted, found by "
            + ", ".join(f"{how} {n}" for how, n in sorted(found.items()))
            + f"; {wiped} wiped before found; {repaired} fetched again by the end"
        ] + [
            f"bitrot: not fetched again by the end: {c.path} on {c.node}"
            for c in self.corruptions
            if not c.repaired
        ]

    def violations(self) -> list[Violation]:
        found = []
        for c in self.corruptions:
            if not c.found_by and not c.wiped:
                found.append(Violation("bitrot", c.key, f"{c.path} on {c.node} never detected"))
            if c.served != "ok":
                found.append(Violation("bitrot", c.key, f"read via {c.node}: {c.served}"))
        return found


class All(Nemesis):
    """A random one of the other nemeses at each step."""

    name = "all"

    def __init__(self, parts: list[Nemesis], rng: random.Random) -> None:
        self.parts = parts
        self.rng = rng

    def prepare(self, client: Client, frozen: dict[str, str]) -> None:
        for part in self.parts:
            part.prepare(client, frozen)

    def step(self) -> None:
        self.rng.choice(self.parts).step()

    def violations(self) -> list[Violation]:
        return [v for part in self.parts for v in part.violations()]

    def notes(self) -> list[str]:
        return [note for part in self.parts for note in part.notes()]

    def finish(self) -> None:
        for part in self.parts:
            part.finish()


SINGLE = {n.name: n for n in (Kill, Pause, Partition, Clock, Layout, BitRot)}
MIXES = [*SINGLE, "all"]


def make_nemesis(mix: str, cluster: FaultCluster, history: History, rng: random.Random) -> Nemesis:
    if mix == "all":
        return All([kind(cluster, history, rng) for kind in SINGLE.values()], rng)
    return SINGLE[mix](cluster, history, rng)
