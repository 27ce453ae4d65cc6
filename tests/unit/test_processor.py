"""The processor over the in-memory broker: delivery behaviour, stepped with run_once."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor import pipeline
from processor.session import TP, FatalKafkaError
from tests.support.memory_broker import MemoryBroker, MemorySession
from tests.support.rig import Rig


def test_requests_on_two_partitions_each_get_one_result(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ids = rig.submit(["a", "b", "c"], partition=0) + rig.submit(["d", "e"], partition=1)
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 3 and rig.committed(1) == 2)
    rig.stop()
    assert rig.answered() == {i: 1 for i in ids}
    assert all(r["status"] == "success" for r in rig.results())


def test_bad_input_is_answered_and_its_offset_committed(tmp_path: Path) -> None:
    """Undecodable bytes go to the DLQ with the original; an invalid request gets an error result."""
    rig = Rig(tmp_path)
    rig.submit(raw=b"\x00not avro at all")
    rig.submit(["empty-text"], text="")
    rig.submit(["fine"])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 3)
    rig.stop()
    (dead,) = rig.dead_letters()
    assert dead["original_value"] == b"\x00not avro at all" and dead["source_offset"] == 0
    assert {r["request_id"]: r["error_code"] for r in rig.results()} == {"empty-text": "invalid_request",
                                                                        "fine": None}


def test_transient_storage_errors_are_retried_and_counted(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.storage.transient_failures = 2
    rig.submit(["flaky"])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 1)
    rig.stop()
    (result,) = rig.results()
    assert result["status"] == "success" and result["attempts"] == 3


def test_storage_errors_past_the_attempts_end_the_request(tmp_path: Path) -> None:
    rig = Rig(tmp_path)  # max_attempts 3 in the rig
    rig.storage.transient_failures = 10
    rig.submit(["down"])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 1)
    rig.stop()
    (result,) = rig.results()
    assert (result["error_code"], result["attempts"]) == ("storage_error", 3)


def test_an_aborted_transaction_is_redone_without_duplicates(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.session.fail_next_commit("abort")
    rig.session.fail_next_commit("abort")
    ids = rig.submit(["a", "b", "c"])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 3)
    rig.stop()
    assert rig.answered() == {i: 1 for i in ids}


def settled(rig: Rig, n: int) -> bool:
    """All ``n`` requests of partition 0 committed, every record taken, and nothing taken still waiting
    for a commit. Committed offsets alone can reach ``n`` while redone work is under way (a stuck
    transaction that covered all of them turns out committed): what that work does next counts too."""
    return (rig.committed(0) == n and rig.session.positions.get(("req", 0)) == n
            and not any(rig.processor.ledger.entries.values()))


@pytest.mark.parametrize("kind", ["stuck", "stuck-commits"])
def test_a_stuck_commit_replaces_the_producer_and_every_request_is_answered_once(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transactional call stuck in librdkafka: the worker keeps serving through the producer's
    replacement, whether the stuck transaction turns out aborted or committed (its commit reached the
    broker before the new producer fenced it)."""
    monkeypatch.setattr(pipeline, "SEEK_RETRY_SECONDS", 0.01)  # the seek waits for the replacement: retry soon
    rig = Rig(tmp_path)
    rig.session.fail_next_commit(kind)
    ids = rig.submit(["a", "b", "c"])
    rig.start()
    rig.step_until(lambda: settled(rig, 3))
    rig.stop()
    assert rig.session.replacements == 1
    assert rig.answered() == {i: 1 for i in ids}


class SeeksAtOnce(MemorySession):
    """The design that was tried and not landed: rewinding while the stuck producer is not fenced yet."""

    def seek_to_committed(self, tps: list[TP]) -> list[TP]:
        replacing, self.replacing = self.replacing, 0
        try:
            return super().seek_to_committed(tps)
        finally:
            self.replacing = replacing


def test_rewinding_before_the_stuck_producer_is_fenced_would_answer_twice(tmp_path: Path) -> None:
    """Why ``seek_to_committed`` waits for the replacement: redoing from offsets that the stuck
    transaction then commits answers the same request twice (3 duplicates in a chaos run)."""
    broker = MemoryBroker()
    rig = Rig(tmp_path, broker=broker, session=SeeksAtOnce(broker))
    rig.session.fail_next_commit("stuck-commits")
    ids = rig.submit(["a", "b", "c"])
    rig.start()
    rig.step_until(lambda: settled(rig, 3))
    rig.stop()
    assert max(rig.answered().values()) > 1 and set(rig.answered()) == set(ids)


def test_a_fatal_commit_error_stops_the_loop(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.session.fail_next_commit("fatal")
    rig.submit(["a"])
    rig.start()
    with pytest.raises(FatalKafkaError):
        rig.step_until(lambda: False)
    rig.processor.stop()
    assert rig.results() == []


def test_a_lost_partition_commits_nothing_and_its_next_owner_answers(tmp_path: Path) -> None:
    rig = Rig(tmp_path, partitions=1)
    rig.submit(["a", "b"])
    rig.start()
    rig.step_until(lambda: bool(rig.processor.ledger.entries.get(("req", 0))))
    rig.broker.lose(rig.session, [("req", 0)])
    rig.processor.run_once()
    rig.stop()
    rig2 = Rig(tmp_path / "2", partitions=1, broker=rig.broker).start()
    rig2.step_until(lambda: rig2.committed(0) == 2)
    rig2.stop()
    assert rig.answered() == {"a": 1, "b": 1}
