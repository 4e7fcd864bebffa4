"""The export check's statistics: Wilson intervals, the paired accuracy change, and the CPU features read."""

from __future__ import annotations

import numpy as np
import pytest

from bertfit.deploy.check import compare, paired_change, wilson_interval
from bertfit.runtime.cpu import cpu_features


def test_wilson_interval_is_sound_at_zero_and_matches_known_values():
    low, high = wilson_interval(0, 100)
    assert low == 0.0 and high == pytest.approx(0.0370, abs=1e-4)  # never the empty [0, 0] of the normal interval
    low, high = wilson_interval(15, 1000)
    assert (low, high) == (pytest.approx(0.00911, abs=1e-4), pytest.approx(0.02463, abs=1e-4))
    assert wilson_interval(5, 5)[1] == 1.0


def test_paired_change_counts_only_the_rows_that_differ():
    reference = np.array([True] * 90 + [False] * 10)
    variant = reference.copy()
    variant[:3] = False  # lost 3 rows
    variant[95] = True  # gained 1
    change, low, high = paired_change(reference, variant)
    assert change == pytest.approx(-2.0) and low < -2.0 < high
    assert paired_change(reference, reference) == (0.0, 0.0, 0.0)


def test_compare_reports_disagreement_with_its_interval():
    labels = np.array([0, 1, 0, 1])
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    checked = reference.copy()
    checked[2] = [0.4, 0.6]  # one label flips: was right, now wrong
    record = compare(reference, checked, labels)
    assert record["disagreement"] == 0.25 and record["accuracy"] == 0.75 and record["accuracy_change_points"] == -25.0
    low, high = record["disagreement_interval"]
    assert low < 0.25 < high and record["max_probability_difference"] == pytest.approx(0.2)


@pytest.mark.parametrize("text, flags, dot, bf16", [
    ("model name\t: Intel Xeon\nflags\t\t: fpu sse avx avx2 avx512f avx512bw\n", ["avx2", "avx512f"], False, "emulated"),
    ("model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n", ["avx2", "avx512_bf16", "avx512_vnni",
                                                                                  "avx512f"], True, "avx512_bf16"),
    ("model name\t: Xeon SPR\nflags\t\t: avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n",
     ["amx", "amx_bf16", "amx_int8", "avx2", "avx512_vnni", "avx512f"], True, "amx"),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp sve i8mm\nCPU part\t: 0xd40\n", ["dotprod", "i8mm", "neon", "sve"], True,
     "emulated"),
    ("", [], False, "emulated"),  # no /proc/cpuinfo
])
def test_cpu_features_reads_the_flags_that_decide_int8_and_bf16_speed(tmp_path, text, flags, dot, bf16):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    features = cpu_features(path)
    assert features["flags"] == flags and features["int8_dot_product"] is dot
    assert features["bf16_matmul"] == bf16
    assert features["cores"] >= 1 and features["machine"]
    assert cpu_features(tmp_path / "missing")["flags"] == []
