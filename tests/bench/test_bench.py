"""The benchmark's own parts: the seed-style baseline agrees with the engine, window counts, the table."""

from __future__ import annotations

import torch

from bench import baseline
from bench.__main__ import n_windows, table
from engine.inference import slide_inference
from engine.models import build_segmentor


def test_baseline_equals_the_engine_reference_blend() -> None:
    """Two independent implementations of mmseg 0.21's slide_inference give the same logits."""
    torch.manual_seed(0)
    model = build_segmentor("lite_resnet", 4, aux_head=False).eval()
    img = torch.randn(1, 3, 150, 170)
    ours = slide_inference(model, img, tile=64, stride=48, num_classes=4, blend="reference")
    seed = baseline.slide_inference(model, img, 4, tile=64, stride=48)
    torch.testing.assert_close(ours, seed, rtol=1e-5, atol=1e-5)


def test_window_count_follows_mmseg() -> None:
    # h_grids = max(H - tile + stride - 1, 0) // stride + 1 (mmseg 0.21)
    assert n_windows(1024, 512, 384) == 9
    assert n_windows(4096, 512, 384) == 121
    assert n_windows(300, 512, 384) == 1


def test_table_lists_every_arch_and_memory_row() -> None:
    row = dict.fromkeys(
        ("gflop_per_tile", "forward_s", "efficiency_module", "efficiency_engine", "engine_overhead",
         "speedup_reference", "labels_identical_reference", "speedup_default_smooth", "agreement_default_smooth",
         "speedup_fast", "agreement_fast", "gflop_per_tile_fast_head", "forward_fast_head_s", "speedup_exact",
         "labels_identical_exact", "forward_compiled_s", "compile_s", "speedup_compiled",
         "agreement_compiled"), 1.0)  # fmt: skip
    results = {
        "machine": "m", "threads": 2, "peak_gflops": 100.0,
        "archs": [{**row, "arch": "rsp_swin_t", "raster": 1024, "windows": 9}],
        "memory": [{"raster": 2048, "peak_rss_mib": 500.0}, {"raster": 8192, "peak_rss_mib": 550.0}],
    }  # fmt: skip
    text = table(results)
    assert "rsp_swin_t" in text and "| 8192² | 550 | 1.10× |" in text


def test_cli_table_states_precision_compilation_and_both_ratios() -> None:
    from bench.cli_runs import table as cli_table

    row = {"arch": "rsp_resnet50", "raster": "cli_2048.tif", "windows": 25, "baseline_s": 60.0, "default_s": 25.0,
           "default_precision": "bf16", "default_compiled": True, "speedup_default": 2.4, "agreement_default": 0.99,
           "reference_fp32_s": 40.0, "speedup_reference_fp32": 1.5, "labels_identical_reference_fp32": 1.0,
           "warmup": {"precision": "bf16", "eager_s": 1.3, "compiled_s": 1.0, "compile_s": 70.0,
                      "cache": "cold"}}  # fmt: skip
    text = cli_table([row])
    expected = "| rsp_resnet50 | cli_2048.tif (25 win) | 60.0 | 25.0 | bf16, yes | 2.40× 99.00 % | 1.50× 100.000 % |"
    assert expected in text
