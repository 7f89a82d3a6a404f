"""What one sample holds in memory (agent/inference/footprint.py)."""

from __future__ import annotations

from agent.inference.footprint import available_bytes, sample_bytes


def test_sample_bytes_counts_frames_labels_features_and_the_pool_per_frame():
    one = sample_bytes(1, (480, 854), 520, (45, 80), (60, 107), 20, 2)
    assert one == 3 * 480 * 854 + 16 * 480 * 854 + 4 * 520 * 45 * 80 + 4 * 2 * 20 * 60 * 107
    assert sample_bytes(1000, (480, 854), 520, (45, 80), (60, 107), 20, 2) == 1000 * one  # about 15 GiB


def test_available_bytes_reads_memavailable_and_is_none_when_unknown(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:   100 kB\nMemAvailable:   2048 kB\n")
    assert available_bytes(meminfo) == 2048 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\n")  # an old kernel without the field
    assert available_bytes(meminfo) is None
    meminfo.write_text("MemAvailable: lots kB\n")
    assert available_bytes(meminfo) is None
    assert available_bytes(tmp_path / "absent") is None
