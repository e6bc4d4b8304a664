"""The round's rules (granary/table/paxos.py) on simulated acceptors, under every
schedule Hypothesis draws: messages delivered in any order or never, proposers
that retry with higher ballots, two sets of acceptors during a layout change.

Each proposer runs one compare-and-set on a register whose value is a row of
versions (version id -> (timestamp, etag)) merged as the object rows are: the
newest version wins and the older ones are dropped. "create" succeeds only if
no version exists, "swap E" only if the newest version's etag is E; a change is
stamped with its round's ballot counter. Whatever the schedule, successful
creates are at most one and successful swaps form a single chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granary.table.paxos import (
    ZERO,
    AcceptorState,
    Ballot,
    QuorumCount,
    next_ballot,
    on_accept,
    on_prepare,
)

Row = dict[str, tuple[int, str]]  # version id -> (timestamp, etag)


def newest(row: Row) -> str | None:
    return max(row.values())[1] if row else None


def merge_rows(mine: Row, theirs: Row) -> Row:
    """Union, then only the newest version (by stamp, then etag) is kept."""
    both = mine | theirs
    if not both:
        return {}
    name = max(both, key=lambda n: both[n])
    return {name: both[name]}


@dataclass
class Acceptor:
    state: AcceptorState = field(default_factory=AcceptorState)
    row: Row = field(default_factory=dict)

    def prepare(self, ballot: Ballot) -> tuple[bool, Ballot, Row]:
        self.state, ok = on_prepare(self.state, ballot)
        return ok, self.state.promised, dict(self.row)

    def accept(self, ballot: Ballot, row: Row) -> tuple[bool, Ballot]:
        self.state, ok = on_accept(self.state, ballot)
        if ok:
            self.row = merge_rows(self.row, row)
        return ok, self.state.promised


@dataclass
class Proposer:
    name: str
    expected: str | None  # None: a create
    sets: list[list[str]]
    highest: Ballot = ZERO
    attempts: int = 0
    phase: str = "prepare"
    count: QuorumCount | None = None
    ballot: Ballot = ZERO
    seen: Row = field(default_factory=dict)
    proposal: Row = field(default_factory=dict)
    outcome: str | None = None  # "won", "refused", "gave up"

    def start(self) -> None:
        self.attempts += 1
        self.ballot = next_ballot(self.highest, self.name.encode())
        self.phase, self.seen = "prepare", {}
        self.count = QuorumCount([[n.encode() for n in s] for s in self.sets])

    def deliver(self, acceptor_name: str, acceptor: Acceptor) -> None:
        assert self.count is not None
        node = acceptor_name.encode()
        if self.outcome is not None or node in self.count.yes or node in self.count.no:
            return
        if node not in self.count.nodes:
            return
        if self.phase == "prepare":
            ok, promised, row = acceptor.prepare(self.ballot)
            self.count.add(node, ok, None if ok else promised)
            if ok:
                self.seen = merge_rows(self.seen, row)
            if self.count.reached:
                self._decide()
                return
        else:
            ok, promised = acceptor.accept(self.ballot, self.proposal)
            self.count.add(node, ok, None if ok else promised)
            if self.count.reached:
                self.outcome = self.decision
        if self.count.lost:
            self._retry()

    def lose(self, acceptor_name: str) -> None:
        """The message to this acceptor, or its answer, is lost: it counts as a failure."""
        assert self.count is not None
        node = acceptor_name.encode()
        answered = node in self.count.yes or node in self.count.no
        if self.outcome is None and not answered and node in self.count.nodes:
            self.count.add(node, False)
            if self.count.lost:
                self._retry()

    def _decide(self) -> None:
        current = newest(self.seen)
        counter = self.ballot[0]
        if current == self.name:  # an earlier attempt's version: committed, stamped anew
            self.decision = "won"
            self.proposal = merge_rows(self.seen, {self.name: (counter, self.name)})
        elif (self.expected is None and current is None) or (
            self.expected is not None and current == self.expected
        ):
            stamped = max((t for t, _ in self.seen.values()), default=-1)
            if stamped >= counter:  # redo the round above what the row holds
                self.highest = max(self.highest, (stamped, b"", 0))
                self.start()
                return
            self.decision = "won"
            self.proposal = merge_rows(self.seen, {self.name: (counter, self.name)})
        else:
            self.decision, self.proposal = "refused", dict(self.seen)  # written back
        self.phase = "accept"
        assert self.count is not None
        self.count = QuorumCount(self.count.sets)

    def _retry(self) -> None:
        assert self.count is not None
        self.highest = max(self.highest, self.count.highest_refusal, self.ballot)
        if self.attempts >= 4:
            self.outcome = "gave up"
        else:
            self.start()


def run_schedule(
    sets: list[list[str]],
    proposers: list[Proposer],
    schedule: list[tuple[int, int, bool]],
    initial: Row | None = None,
) -> dict[str, Acceptor]:
    """Start every proposer, then deliver (or drop) one message per schedule step."""
    names = sorted({n for s in sets for n in s})
    acceptors = {n: Acceptor(row=dict(initial or {})) for n in names}
    for proposer in proposers:
        proposer.start()
    for which, target, drop in schedule:
        proposer = proposers[which % len(proposers)]
        name = names[target % len(names)]
        if drop:
            proposer.lose(name)
        else:
            proposer.deliver(name, acceptors[name])
    return acceptors


def check_history(proposers: list[Proposer], initial: str | None) -> None:
    won = [p for p in proposers if p.outcome == "won"]
    creates = [p for p in won if p.expected is None]
    if initial is None:
        assert len(creates) <= 1, [p.name for p in creates]
    else:
        assert not creates
    predecessors = [p.expected for p in won if p.expected is not None]
    assert len(predecessors) == len(set(predecessors)), predecessors  # no fork
    known = {initial} | {p.name for p in won}
    assert all(e in known for e in predecessors), (predecessors, known)


SETS = {
    "three": [["a", "b", "c"]],
    "five": [["a", "b", "c", "d", "e"]],
    "layout change": [["a", "b", "c"], ["b", "c", "d"]],
}


@pytest.mark.parametrize("sets", SETS.values(), ids=SETS.keys())
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_at_most_one_create_and_one_chain_of_swaps(sets, data) -> None:
    initial = data.draw(st.sampled_from([None, "v0"]))
    count = data.draw(st.integers(2, 4))
    expectations = data.draw(
        st.lists(st.sampled_from([None, "v0", "p0", "p1", "p2"]), min_size=count, max_size=count)
    )
    proposers = [Proposer(f"p{i}", expected, sets) for i, expected in enumerate(expectations)]
    schedule = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, 3), st.integers(0, 4), st.integers(0, 7).map(lambda n: n == 0)
            ),
            max_size=120,
        )
    )
    seed = {} if initial is None else {initial: (0, initial)}
    acceptors = run_schedule(sets, proposers, schedule, seed)
    check_history(proposers, initial)
    # Whatever won is on a majority of every set: a later round sees it.
    for proposer in proposers:
        if proposer.outcome == "won":
            for nodes in sets:
                holding = [n for n in nodes if proposer.name in acceptors[n].row]
                assert len(holding) > len(nodes) // 2


def test_a_refusal_is_written_back_so_that_a_later_round_refuses_too() -> None:
    """A create that saw another's version on one acceptor only writes it back
    to a majority before answering 412: the version cannot vanish afterwards."""
    sets = [["a", "b", "c"]]
    first, second = Proposer("p0", None, sets), Proposer("p1", None, sets)
    acceptors = run_schedule(sets, [], [])
    first.start()
    # p0 prepares on a and b, decides, and its accept reaches only a.
    first.deliver("a", acceptors["a"])
    first.deliver("b", acceptors["b"])
    first.deliver("a", acceptors["a"])
    assert first.outcome is None and "p0" in acceptors["a"].row
    # p1 prepares on a and c (sees p0 on a), refuses, writes back to a and c.
    second.highest = first.ballot
    second.start()
    second.deliver("a", acceptors["a"])
    second.deliver("c", acceptors["c"])
    second.deliver("a", acceptors["a"])
    second.deliver("c", acceptors["c"])
    assert second.outcome == "refused"
    assert "p0" in acceptors["c"].row  # now on a majority: a later create is refused


def test_a_change_decided_late_by_a_lower_ballot_never_beats_a_committed_one() -> None:
    """p0 has its promises (counter 1), then p1 gets promises from b and c with a
    higher counter and commits; p0's change, accepted by a alone, is stamped with
    counter 1, so when p0 retries, the row it sees holds p1's newer version: refused.
    (Stamped with the time of its decision, p0's version would be the newer one, and
    p0 would take it for its own earlier commit: two creates won.)"""
    sets = [["a", "b", "c"]]
    first, second = Proposer("p0", None, sets), Proposer("p1", None, sets)
    acceptors = run_schedule(sets, [], [])
    first.start()
    first.deliver("a", acceptors["a"])
    first.deliver("b", acceptors["b"])  # p0 decides (counter 1)
    second.highest = first.ballot
    second.start()
    second.deliver("b", acceptors["b"])
    second.deliver("c", acceptors["c"])  # p1 decides (counter 2)
    first.deliver("a", acceptors["a"])  # accepted by a only
    first.deliver("b", acceptors["b"])
    first.deliver("c", acceptors["c"])  # refused twice: p0 retries above counter 2
    second.deliver("b", acceptors["b"])
    second.deliver("c", acceptors["c"])
    assert second.outcome == "won"
    for name in "ab":  # p0's retry prepares on a and b
        first.deliver(name, acceptors[name])
    for name in "ab":
        first.deliver(name, acceptors[name])
    assert first.outcome == "refused"
    assert all(newest(acceptors[n].row) == "p1" for n in "abc")


def test_quorum_count_over_two_sets() -> None:
    count = QuorumCount([[b"a", b"b", b"c"], [b"b", b"c", b"d"]])
    assert count.nodes == [b"a", b"b", b"c", b"d"]
    count.add(b"a", True)
    count.add(b"b", True)
    assert not count.reached  # the second set has one yes
    count.add(b"d", False, (7, b"x", 1))
    assert not count.lost and count.highest_refusal == (7, b"x", 1)
    count.add(b"c", False)
    assert count.lost  # b alone in the second set
    with pytest.raises(ValueError):
        count.add(b"a", True)


def test_ballots_order_by_counter_then_node_then_process() -> None:
    low = next_ballot(ZERO, b"z")
    high = next_ballot(low, b"a")
    assert high > low and high[0] == low[0] + 1
    state, ok = on_prepare(AcceptorState(), high)
    assert ok
    assert on_prepare(state, low) == (state, False)
    same_counter = (high[0], b"zz", high[2])  # above `high`, but not in counter
    assert same_counter > high and on_prepare(state, same_counter) == (state, False)
    assert on_accept(state, low) == (state, False)
    assert on_accept(state, high)[1]
