"""The GPU extraction script end to end on the CPU at a tiny size, and its table of bfloat16 peaks."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.speed.gpu import bf16_peak_tflops, run


def test_peaks_by_device_name() -> None:
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H200") == 989.4
    assert bf16_peak_tflops("Tesla V100-SXM2-16GB") is None


def test_runs_on_the_cpu_and_reports_the_peak_as_unknown(tmp_path: Path) -> None:
    figures = run("cpu", n_images=2, size=(48, 32), batch_size=2, repeat=1, out=tmp_path / "gpu.json",
                  backbone="resnet18")
    assert json.loads((tmp_path / "gpu.json").read_text()) == json.loads(json.dumps(figures))
    assert figures["fraction_of_bf16_peak"] == "unknown" and figures["bf16_peak_tflops"] == "unknown"
    assert figures["images_per_s"]["forward"] > 0 and figures["gflops_per_image"] > 0
    assert figures["scales"] == [0.3535, 0.5, 0.7071, 1.0, 1.4142]
    assert 0.9 < figures["bf16_vs_fp32_cosine"]["min"] <= 1.0 + 1e-6
