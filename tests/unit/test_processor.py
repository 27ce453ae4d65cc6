"""The processor over the in-memory broker: delivery behaviour, stepped with run_once."""

from __future__ import annotations

from pathlib import Path

from tests.support.rig import Rig


def test_requests_on_two_partitions_each_get_one_result(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ids = rig.submit(["a", "b", "c"], partition=0) + rig.submit(["d", "e"], partition=1)
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 3 and rig.committed(1) == 2)
    rig.stop()
    assert rig.answered() == {i: 1 for i in ids}
    assert all(r["status"] == "success" for r in rig.results())
