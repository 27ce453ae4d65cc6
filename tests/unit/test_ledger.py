"""processor.ledger: plain data in, decisions out. Each test takes microseconds."""

from __future__ import annotations

from collections.abc import Callable

from processor.ledger import Entry, FlowDecision, Ledger

A, B = ("req", 0), ("req", 1)


def ledger(*tps: tuple[str, int]) -> Ledger[Entry]:
    led: Ledger[Entry] = Ledger()
    led.assign(list(tps) or [A])
    return led


def take(led: Ledger[Entry], tp: tuple[str, int], *offsets: int) -> list[Entry]:
    entries = [Entry(tp, o) for o in offsets]
    for e in entries:
        assert led.accept(e)
    return entries


def test_committable_is_the_done_prefix_per_partition() -> None:
    led = ledger(A, B)
    a0, a1, a2 = take(led, A, 0, 1, 2)
    (b0,) = take(led, B, 0)
    led.complete(a0, "ok")
    led.complete(a2, "ok")  # a fast error result behind a request still on the GPU
    led.complete(b0, "ok")
    assert led.committable(16) == [a0, b0]
    assert led.committed_ok([a0, b0]) == {A: 1, B: 1}
    assert led.committable(16) == []
    led.complete(a1, "ok")
    assert led.committable(16) == [a1, a2]
    assert led.committable(1) == [a1]


def test_accept_refuses_foreign_partitions_redeliveries_and_drains() -> None:
    led = ledger(A)
    assert not led.accept(Entry(B, 0))
    take(led, A, 5)
    assert not led.accept(Entry(A, 5))  # re-delivered after a pause/resume
    assert not led.accept(Entry(A, 3))
    assert led.accept(Entry(A, 7))  # a gap (transaction marker, aborted records) is fine
    led.drain()
    assert not led.accept(Entry(A, 8))


def test_epochs_are_never_reused() -> None:
    led = ledger(A)
    first = led.epochs[A]
    led.revoke([A])
    led.assign([A])
    second = led.epochs[A]
    led.rewind()
    assert len({first, second, led.epochs[A]}) == 3


def test_revoke_and_lost_drop_unfinished_entries_and_ignore_their_late_outcomes() -> None:
    led = ledger(A, B)
    (a0,) = take(led, A, 0)
    (b0,) = take(led, B, 0)
    assert led.revoke([A]) == [a0] and a0.state == "dropped"
    assert not led.complete(a0, "late")
    assert led.lost([B]) == [b0]
    led.assign([A])
    assert led.committable(16) == [] and not led.busy()


def test_rewind_drops_everything_uncommitted_and_refuses_held_partitions() -> None:
    led = ledger(A, B)
    a0, a1 = take(led, A, 0, 1)
    led.complete(a0, "ok")
    assert sorted(led.rewind()) == [A, B]
    assert a1.state == "dropped" and led.committable(16) == []
    led.hold([B])  # its seek failed: nothing may be taken from it until one succeeds
    assert not led.accept(Entry(B, 0))
    assert led.accept(Entry(A, 0))  # offsets start over after a rewind
    led.hold([])
    assert led.accept(Entry(B, 0))


def test_drop_and_advance_cannot_both_win() -> None:
    """Defect 2 at the entry: whichever of drop and a stage's claim comes second loses."""
    e = Entry(A, 0)
    assert e.drop(only={"queued", "preparing"})
    assert not e.advance("preparing")
    assert e.state == "dropped"
    e2 = Entry(A, 1)
    assert e2.advance("synthesizing")
    assert not e2.drop(only={"queued", "preparing"})  # on the GPU: a drain lets it finish
    assert e2.state == "synthesizing"


def test_flow_pauses_above_the_limit_and_resumes_below() -> None:
    led = ledger(A, B)
    entries = take(led, A, 0, 1, 2)
    d = led.flow(limit=2)
    assert sorted(d.pause) == [A, B] and d.resume == []
    assert led.flow(limit=2).pause == []  # already paused: nothing to repeat
    led.complete(entries[0], "ok")
    d = led.flow(limit=2)
    assert d.pause == [] and sorted(d.resume) == [A, B]


def test_with_nothing_waiting_the_pause_waits_for_one_more_to_arrive() -> None:
    """The limit leaves room for one more request to arrive before a pause takes effect. When nothing
    is waiting there is none to arrive: pausing then (and resuming, and re-fetching, later) is work for
    nothing at one request at a time. The pause comes with the next request, or at once when the
    client learns that more is waiting."""
    led = ledger(A, B)
    asked: list[bool] = []

    def waiting(answer: bool) -> Callable[[], bool]:
        def ask() -> bool:
            asked.append(answer)
            return answer
        return ask

    entries = take(led, A, 0, 1)
    assert led.flow(limit=1, waiting=waiting(False)) == FlowDecision([], [])
    assert led.paused == set() and asked == [False]
    assert sorted(led.flow(limit=1, waiting=waiting(True)).pause) == [A, B]  # more is there now
    led.complete(entries[0], "ok")
    assert sorted(led.flow(limit=1, waiting=waiting(False)).resume) == [A, B]
    # Two above the limit: paused whatever the client knows (never asked).
    asked.clear()
    take(led, A, 2)
    led.complete(entries[1], "ok")
    led.committed_ok(entries)
    take(led, A, 3, 4)
    assert sorted(led.flow(limit=1, waiting=waiting(False)).pause) == [A, B] and asked == []
    # Paused already, still above the limit: stays paused (nothing to ask).
    assert led.flow(limit=2, waiting=waiting(False)) == FlowDecision([], []) and led.paused == {A, B}
    assert asked == []
    # At or below the limit nothing is asked either.
    assert sorted(led.flow(limit=3, waiting=waiting(True)).resume) == [A, B] and asked == []


def test_a_rebalance_forgets_the_pause() -> None:
    """Defect 3 in the ledger: the pause set belongs to an assignment."""
    led = ledger(A)
    take(led, A, 0, 1, 2)
    assert led.flow(limit=1).pause == [A]
    led.revoke([A])
    led.assign([A])
    assert led.paused == set()
    assert led.flow(limit=1).resume == []  # nothing to resume: the rebalance already did


def test_drain_pauses_everything() -> None:
    led = ledger(A)
    led.drain()
    assert led.flow(limit=16).pause == [A]
