"""The device-trace summaries of benchmarks/scripts/profile_gpu.py on hand-made events (no GPU needed)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "scripts"))

NO_HLO = {"by_name": {}, "by_site": {}, "callee": {}}


def kernel(name, start, duration):
    return {"name": name, "ts": start, "dur": duration, "args": {}}


def test_idle_gaps_are_the_holes_in_the_union_of_kernels_by_length_and_pair():
    from profile_gpu import busy_us, idle_gaps

    events = [kernel("a", 0, 10), kernel("b", 11, 5), kernel("c", 12, 10),  # b inside c's span: no gap after b
              kernel("d", 25, 1), kernel("e", 150, 1), kernel("a", 160, 10), kernel("b", 171, 1)]
    gaps = idle_gaps(events, calls=2, hlo=NO_HLO)
    assert gaps["idle_ms_per_call"] == pytest.approx((1 + 3 + 124 + 9 + 1) / 2 / 1e3)
    assert gaps["idle_ms_by_gap_us"] == pytest.approx({"<2": 1e-3, "<5": 1.5e-3, "<20": 4.5e-3, ">=100": 62e-3})
    assert busy_us(events) + 2 * 1e3 * gaps["idle_ms_per_call"] == pytest.approx(172)
    top = gaps["idle_top"]
    assert (top[0]["before"], top[0]["after"], top[0]["us_per_call"]) == ("d | ", "e | ", 62)
    a_to_b = next(row for row in top if row["before"] == "a | " and row["after"] == "b | ")
    assert a_to_b["count_per_call"] == 1 and a_to_b["us_per_call"] == 1
    assert not any(row["before"] == "b | " for row in top)  # c, still running, is the kernel before d
