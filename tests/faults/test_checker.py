"""The checker's rules on small hand-written histories."""

from __future__ import annotations

from .checker import check_conditional, check_listings, check_reads, check_versions
from .history import Kind, Op, Outcome

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


def put(start, end, value, outcome=OK, key="k"):
    return Op(0, Kind.PUT, key, "n1", start, end, outcome, value=value)


def delete(start, end, outcome=OK, key="k"):
    return Op(0, Kind.DELETE, key, "n1", start, end, outcome)


def get(start, end, value, outcome=OK, key="k"):
    return Op(1, Kind.GET, key, "n2", start, end, outcome, value=value)


def create(start, end, value, outcome=OK, key="k"):
    return Op(0, Kind.CREATE, key, "n1", start, end, outcome, value=value)


def swap(start, end, expected, value, outcome=OK, key="k"):
    return Op(0, Kind.SWAP, key, "n1", start, end, outcome, value=value, expected=expected)


def listing(start, end, keys):
    return Op(2, Kind.LIST, None, "n3", start, end, OK, keys=frozenset(keys))


def rules(ops, final=()):
    return [v.rule for v in check_reads(ops, list(final))]


def test_a_read_after_a_write_sees_it_or_a_newer_one():
    assert rules([put(0, 1, "a"), get(2, 3, "a")]) == []
    assert rules([put(0, 1, "a"), put(2, 3, "b"), get(4, 5, "b")]) == []
    assert rules([put(0, 1, "a"), put(2, 3, "b"), get(4, 5, "a")]) == ["read-after-write"]


def test_every_key_starts_absent():
    assert rules([get(0, 1, None)]) == []
    assert rules([put(0, 1, "a"), get(2, 3, None)]) == ["read-after-write"]


def test_a_delete_is_a_write_of_absent():
    assert rules([put(0, 1, "a"), delete(2, 3), get(4, 5, None)]) == []
    assert rules([put(0, 1, "a"), delete(2, 3), get(4, 5, "a")]) == ["read-after-write"]


def test_concurrent_writes_may_be_seen_in_either_order():
    ops = [put(0, 1, "a"), put(2, 6, "b"), get(3, 4, "a"), get(3, 4, "b"), get(5, 7, "a")]
    assert rules(ops) == []
    # b and c overlap each other; both completed before the read: either may win.
    ops = [put(0, 1, "a"), put(2, 4, "b"), put(3, 5, "c"), get(6, 7, "b"), get(6, 7, "c")]
    assert rules(ops) == []
    assert rules([*ops, get(6, 7, "a")]) == ["read-after-write"]


def test_a_value_from_the_future_or_from_nowhere_is_illegal():
    assert rules([get(0, 1, "a"), put(2, 3, "a")]) == ["read-after-write"]
    assert rules([put(0, 1, "a"), get(2, 3, "zzz")]) == ["read-after-write"]


def test_unknown_writes_may_land_at_any_time_failed_ones_never():
    ops = [put(0, 1, "a"), put(2, 3, "b", UNKNOWN), get(10, 11, "a"), get(12, 13, "b")]
    assert rules(ops) == []
    assert rules([put(0, 1, "a"), put(2, 3, "b", FAIL), get(4, 5, "b")]) == ["read-after-write"]
    # A failed write does not hide older values either.
    assert rules([put(0, 1, "a"), put(2, 3, "b", FAIL), get(4, 5, "a")]) == []


def test_final_reads_must_succeed_and_see_the_last_write():
    ops = [put(0, 1, "a"), put(2, 3, "b")]
    assert rules(ops, [get(10, 11, "b")]) == []
    assert rules(ops, [get(10, 11, "a")]) == ["final-read"]
    assert rules(ops, [get(10, 11, None, FAIL)]) == ["final-read"]


def test_listings_show_completed_puts_and_hide_completed_deletes():
    assert check_listings([put(0, 1, "a"), listing(2, 3, ["k"])], ["k"]) == []
    missing = check_listings([put(0, 1, "a"), listing(2, 3, [])], ["k"])
    assert [v.rule for v in missing] == ["listing"]
    # A delete that may come after the put excuses the absence.
    assert check_listings([put(0, 1, "a"), delete(2, 4), listing(3, 5, [])], ["k"]) == []
    assert check_listings([put(0, 1, "a"), delete(2, 3, UNKNOWN), listing(4, 5, [])], ["k"]) == []
    # ...but not a delete that completed before the put started.
    assert len(check_listings([delete(0, 1), put(2, 3, "a"), listing(4, 5, [])], ["k"])) == 1
    shown = check_listings([put(0, 1, "a"), delete(2, 3), listing(4, 5, ["k"])], ["k"])
    assert [v.rule for v in shown] == ["listing"]
    assert len(check_listings([listing(0, 1, ["k"])], ["k"])) == 1
    assert check_listings([put(0, 2, "a"), listing(1, 3, ["k"])], ["k"]) == []


def conditional(ops):
    return sorted(v.rule for v in check_conditional(ops))


def test_one_create_of_a_new_key_wins():
    assert (
        conditional([create(0, 2, "a"), create(1, 3, "b", FAIL), create(1, 3, "c", UNKNOWN)]) == []
    )
    assert conditional([create(0, 2, "a"), create(1, 3, "b")]) == ["two-creates"]
    # Creates of other keys do not compete.
    assert conditional([create(0, 2, "a"), create(1, 3, "b", key="other")]) == []


def test_acknowledged_swaps_form_one_chain_in_real_time_order():
    chain = [put(0, 1, "a"), swap(2, 3, "a", "b"), swap(4, 5, "b", "c"), swap(6, 7, "c", "d")]
    assert conditional(chain) == []
    # Two swaps that both replaced "a": a fork, as if both compare-and-sets won.
    assert conditional([*chain, swap(2, 3, "a", "x")]) == ["fork"]
    # A swap naming a value nobody wrote starts a second chain.
    assert conditional([*chain, swap(8, 9, "zzz", "y")]) == ["chain"]
    # c's swap ended before b's began, yet replaced what b wrote.
    reordered = [put(0, 1, "a"), swap(6, 7, "a", "b"), swap(2, 3, "b", "c")]
    assert conditional(reordered) == ["swap-order"]
    # Refused swaps are no part of the chain.
    assert conditional([*chain, swap(2, 3, "a", "r", FAIL)]) == []


def test_a_swap_of_unknown_outcome_joins_the_chain_once_a_later_one_names_it():
    ops = [put(0, 1, "a"), swap(2, 3, "a", "b", UNKNOWN), swap(4, 5, "b", "c")]
    assert conditional(ops) == []
    # Unnamed, it may never have happened: no second chain, no fork.
    assert conditional([*ops, swap(2, 3, "c", "u", UNKNOWN)]) == []
    assert conditional([*ops, swap(6, 7, "c", "d"), swap(8, 9, "c", "e", UNKNOWN)]) == []


def vput(start, end, value, version_id, outcome=OK, key="k", locked=False):
    return Op(
        0,
        Kind.PUT,
        key,
        "n1",
        start,
        end,
        outcome,
        value=value,
        version_id=version_id,
        locked=locked,
    )


def vget(start, end, version_id, value, outcome=OK, key="k"):
    return Op(1, Kind.VGET, key, "n2", start, end, outcome, value=value, version_id=version_id)


def vdelete(start, end, version_id, outcome=OK, key="k"):
    return Op(0, Kind.VDELETE, key, "n1", start, end, outcome, version_id=version_id)


def vlist(start, end, versions, markers=(), key="k"):
    return Op(2, Kind.VLIST, key, "n3", start, end, OK, versions=versions, markers=markers)


def version_rules(ops, final=()):
    return sorted(v.rule for v in check_versions(ops, list(final)))


def test_versions_read_and_listed_after_their_writes_are_fine():
    ops = [
        vput(0, 1, "a", "A"),
        vput(2, 3, "b", "B"),
        vget(4, 5, "A", "a"),
        vlist(4, 5, ("B", "A")),
    ]
    assert version_rules(ops) == []


def test_a_version_missing_after_its_write_was_acknowledged_is_lost():
    assert version_rules([vput(0, 1, "a", "A"), vget(2, 3, "A", None)]) == ["version-lost"]
    assert version_rules([vput(0, 1, "a", "A"), vlist(2, 3, ())]) == ["version-lost"]
    # ... unless a deletion of it may have happened by then (even of unknown outcome)
    assert version_rules([vput(0, 1, "a", "A"), vdelete(1, 9, "A", UNKNOWN), vlist(2, 3, ())]) == []
    # ... and a read that began before the write was acknowledged may miss it
    assert version_rules([vput(0, 2, "a", "A"), vget(1, 3, "A", None)]) == []


def test_a_version_deleted_for_good_never_comes_back():
    ops = [vput(0, 1, "a", "A"), vdelete(2, 3, "A"), vget(4, 5, "A", "a"), vlist(4, 5, ("A",))]
    assert version_rules(ops) == ["version-resurrected", "version-resurrected"]
    assert version_rules([vput(0, 1, "a", "A"), vdelete(2, 3, "A"), vget(2.5, 5, "A", "a")]) == []


def test_a_version_read_gives_its_own_value_and_ids_are_unique():
    assert version_rules([vput(0, 1, "a", "A"), vget(2, 3, "A", "b")]) == ["version-value"]
    assert version_rules([vput(0, 1, "a", "A"), vput(2, 3, "b", "A")]) == ["version-unique"]


def test_a_listing_shows_versions_newest_first():
    ops = [vput(0, 1, "a", "A"), vput(2, 3, "b", "B")]
    assert version_rules([*ops, vlist(4, 5, ("A", "B"))]) == ["version-order"]
    concurrent = [vput(0, 3, "a", "A"), vput(1, 2, "b", "B")]
    assert version_rules([*concurrent, vlist(4, 5, ("A", "B"))]) == []
    assert version_rules([*concurrent, vlist(4, 5, ("B", "A"))]) == []


def test_final_version_reads_must_succeed():
    final = [vget(9, 10, "A", None, outcome=FAIL)]
    assert version_rules([vput(0, 1, "a", "A")], final) == ["final-read"]


def test_a_locked_version_is_never_deleted_nor_excused_for_missing():
    put_locked = vput(0, 1, "a", "A", locked=True)
    assert version_rules([put_locked, vdelete(2, 3, "A")]) == ["locked-deleted"]
    refused = vdelete(2, 3, "A", FAIL)
    assert version_rules([put_locked, refused, vget(4, 5, "A", "a")]) == []
    unknown = vdelete(2, 3, "A", UNKNOWN)
    assert version_rules([put_locked, unknown, vlist(4, 5, ())]) == ["locked-lost"]
