"""Single-decree rounds (CASPaxos) on one row: the acceptor's rules and the proposer's
count of answers, without I/O.

A conditional commit (a create that must not overwrite, a compare-and-set on
an ETag) is decided by one round among the row's replicas, as
docs/design/data-protection.md describes: Prepare with a ballot to every node
of every active write set, a majority of each set promising; the proposer
merges the rows they hold and decides; Accept of the decided row to the same
nodes, a majority of each set accepting. The row is a CRDT, so an acceptor
merges what it accepts into its row instead of replacing it.

Ballots are (counter, node id, process nonce), compared as tuples: the nonce
tells apart the processes of one node, and the incarnations of one process
(a restarted process must never reuse a ballot its predecessor sent with
another row).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

Ballot = tuple[int, bytes, int]
ZERO: Ballot = (0, b"", 0)
PROCESS_NONCE = secrets.randbits(63)
"""This process's part of its ballots, drawn at start."""


class AcceptorState(msgspec.Struct, array_like=True, frozen=True):
    """What an acceptor keeps per row, beside the row: the highest ballot it promised
    (no Prepare or Accept below it is taken any more) and the last one it accepted."""

    promised: Ballot = ZERO
    accepted: Ballot = ZERO


def next_ballot(highest_seen: Ballot, node: bytes, now_ms: int = 0) -> Ballot:
    """A ballot above `highest_seen`, this process's own.

    Its counter is at least `now_ms`: a round on a row with a history then
    starts above the promises of the rounds before it (one prepare instead of
    a refused one and a retry). Clocks only make this likely: a counter from
    a clock behind is refused and raised above the refusal, as any other.
    """
    return (max(highest_seen[0] + 1, now_ms), node, PROCESS_NONCE)


def on_prepare(state: AcceptorState, ballot: Ballot) -> tuple[AcceptorState, bool]:
    """The acceptor's new state and whether it promises `ballot`.

    A promise is given to a ballot whose counter is above that of every ballot
    promised before (not only a ballot above it): two rounds that both get a
    majority of promises share an acceptor, which promised them in turn, so
    their counters differ and the later one's is larger. Of the rounds that
    reach Accept, counter order is ballot order, and a round may stamp what it
    writes with its counter (`Objects.write_version_if` does): a change decided
    by a lower ballot and accepted by a minority is then older than any change
    a higher ballot commits, and a merge never puts it back over that one.
    The acceptor answers its row, read in the transaction that stores the state.
    """
    if ballot[0] > state.promised[0]:
        return AcceptorState(ballot, state.accepted), True
    return state, False


def on_accept(state: AcceptorState, ballot: Ballot) -> tuple[AcceptorState, bool]:
    """The acceptor's new state and whether it accepts at `ballot` (the caller then
    merges the row into its own, in the same transaction)."""
    if ballot >= state.promised:
        return AcceptorState(ballot, ballot), True
    return state, False


def majority(size: int) -> int:
    return size // 2 + 1


@dataclass
class QuorumCount:
    """Answers to one phase of a round, counted against a majority of every set.

    A node in several sets counts in each. `add` takes each node's answer once
    (a yes, a no naming the ballot it promised, or a failure to answer);
    `reached` is set once every set has a majority of yeses, `lost` once some
    set can no longer get one.
    """

    sets: Sequence[Sequence[bytes]]
    yes: set[bytes] = field(default_factory=set)
    no: set[bytes] = field(default_factory=set)
    highest_refusal: Ballot = ZERO

    @property
    def nodes(self) -> list[bytes]:
        """Every node of every set, once each, in the sets' order."""
        return list(dict.fromkeys(node for nodes in self.sets for node in nodes))

    def add(self, node: bytes, ok: bool, promised: Ballot | None = None) -> None:
        if node in self.yes or node in self.no:
            raise ValueError(f"node {node.hex()} answered twice")
        (self.yes if ok else self.no).add(node)
        if promised is not None and promised > self.highest_refusal:
            self.highest_refusal = promised

    @property
    def reached(self) -> bool:
        return all(
            sum(node in self.yes for node in nodes) >= majority(len(nodes)) for nodes in self.sets
        )

    @property
    def lost(self) -> bool:
        return any(
            sum(node not in self.no for node in nodes) < majority(len(nodes)) for nodes in self.sets
        )
