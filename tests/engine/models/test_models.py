"""The RSP UperNets: shapes, strides, gradients, strict checkpoint loading and the model file round trip.

Equality with the RSP reference code itself is checked outside this repository (the reference is not vendored);
these tests pin down everything that can be checked from our side.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.model_file import ModelInfo, load_model_file, read_model_info, save_model_file
from engine.models import (
    ARCHS,
    BackboneContractError,
    CheckpointMismatchError,
    UnknownArchError,
    ViTAEInputError,
    arch_spec,
    build_backbone,
    build_segmentor,
    load_mmseg_checkpoint,
    load_rsp_backbone,
    read_checkpoint,
)
from engine.models.spec import feature_channels

ROOT = Path(__file__).resolve().parents[3]
RSP_ARCHS = ("rsp_resnet50", "rsp_swin_t", "rsp_vitaev2_s")
# The channels RSP's networks are known to have (RSP_SPEC); every registered arch is also checked against the
# channels its backbone states.
KNOWN_CHANNELS = {
    "rsp_resnet50": (256, 512, 1024, 2048),
    "rsp_swin_t": (96, 192, 384, 768),
    "rsp_vitaev2_s": (64, 128, 256, 512),
    "lite_resnet": (32, 64, 128, 256),
}
# Parameter counts from RSP_SPEC §9's formulas (computed independently of this code), K = 5.
PARAMS_K5 = {"rsp_resnet50": (66_39, 64_02), "rsp_swin_t": (59_83, 58_94), "rsp_vitaev2_s": (49_04, 48_45)}


def _seeded(arch: str, k: int = 5, aux: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_segmentor(arch, k, aux_head=aux)
    # Non-trivial BatchNorm statistics, so eval-mode mistakes show.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_backbone_strides_and_channels(arch: str) -> None:
    x = torch.randn(1, 3, 64, 64)
    backbone = build_backbone(arch).eval()
    with torch.no_grad():
        feats = backbone(x)
    assert [f.shape[1] for f in feats] == list(feature_channels(backbone))
    assert arch not in KNOWN_CHANNELS or [f.shape[1] for f in feats] == list(KNOWN_CHANNELS[arch])
    assert [64 // f.shape[2] for f in feats] == [4, 8, 16, 32]
    assert all(torch.isfinite(f).all() for f in feats)


def test_every_rsp_arch_and_the_demo_arch_is_registered() -> None:
    assert set(KNOWN_CHANNELS) <= set(ARCHS)


def test_a_backbone_without_out_channels_is_refused_by_name() -> None:
    with pytest.raises(BackboneContractError, match="out_channels"):
        feature_channels(torch.nn.Conv2d(3, 8, 3))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_segmentor_logits_and_backward(arch: str) -> None:
    model = build_segmentor(arch, 6).train()
    size = 32 if arch == "rsp_vitaev2_s" else 64  # ViTAE's grouped convs are slow to differentiate on a CPU
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 6, size, size)
    assert torch.isfinite(logits).all()
    decode, aux = model.forward_train(x)
    assert decode.shape == (2, 6, size // 4, size // 4)
    assert aux is not None and aux.shape == (2, 6, size // 16, size // 16)
    target = torch.randint(0, 6, (2, size, size), generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(logits, target) + 0.4 * torch.nn.functional.cross_entropy(
        aux, target[:, ::16, ::16]
    )
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    # The gradient reaches the first layer of the backbone (through every stage) and both heads.
    first = next(n for n in grads if n.startswith("backbone."))
    for name in (first, "decode_head.conv_seg.weight", "auxiliary_head.conv_seg.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    # DDP's find_unused_parameters, as the arch's spec states it: set exactly when some parameter gets no gradient.
    unused = [n for n, g in grads.items() if g is None]
    assert bool(unused) == arch_spec(arch).find_unused_parameters, unused[:5]


@pytest.mark.parametrize("arch", ["rsp_resnet50", "rsp_swin_t"])
def test_non_multiple_input_sizes(arch: str) -> None:
    with torch.no_grad():
        out = _seeded(arch)(torch.randn(1, 3, 50, 71))
    assert out.shape == (1, 5, 50, 71) and torch.isfinite(out).all()


def test_vitae_refuses_non_square_inputs() -> None:
    with pytest.raises(ViTAEInputError, match="square"):
        build_segmentor("rsp_vitaev2_s", 5).eval()(torch.zeros(1, 3, 64, 96))


@pytest.mark.parametrize("arch", RSP_ARCHS)
def test_parameter_counts_match_the_formula_counts(arch: str) -> None:
    model = build_segmentor(arch, 5)
    total = sum(p.numel() for p in model.parameters())
    no_aux = total - sum(p.numel() for p in model.auxiliary_head.parameters())
    assert (round(total / 1e4), round(no_aux / 1e4)) == PARAMS_K5[arch]


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownArchError) as err:
        build_segmentor("resnet50", 5)
    for name in RSP_ARCHS:
        assert name in str(err.value)


@pytest.mark.parametrize("arch", RSP_ARCHS)
def test_mmseg_checkpoint_round_trip(arch: str, tmp_path: Path) -> None:
    model = _seeded(arch, 16)
    path = tmp_path / "released.pth"
    meta = {"CLASSES": [f"c{i}" for i in range(16)], "mmseg_version": "0.21.0"}
    torch.save({"meta": meta, "state_dict": model.state_dict(), "optimizer": {}}, path)
    loaded = load_mmseg_checkpoint(path, arch, 16)
    assert not loaded.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_with_a_renamed_key_is_refused_by_name(tmp_path: Path) -> None:
    state = _seeded("lite_resnet").state_dict()
    state["decode_head.conv_seg.weightX"] = state.pop("decode_head.conv_seg.weight")
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_mmseg_checkpoint(path, "lite_resnet", 5)
    assert "decode_head.conv_seg.weight" in str(err.value)  # missing
    assert "decode_head.conv_seg.weightX" in str(err.value)  # unexpected


def test_wrong_number_of_classes_names_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "k6.pth"
    torch.save({"state_dict": _seeded("lite_resnet", 6).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"conv_seg.weight \(checkpoint \(6,"):
        load_mmseg_checkpoint(path, "lite_resnet", 5)


class FakeCfgNode(dict):
    """Stands in for the yacs CfgNode RSP pickles into its backbone files (weights_only refuses it)."""


@pytest.mark.parametrize("arch", RSP_ARCHS)
def test_rsp_backbone_file_round_trip(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    backbone = build_backbone(arch).eval()
    state = {
        f"module.{k}": v for k, v in backbone.state_dict().items() if not k.startswith("norm") or arch == "rsp_resnet50"
    }
    state["module.head.weight" if arch != "rsp_resnet50" else "module.fc.weight"] = torch.zeros(51, 8)
    cfg = FakeCfgNode(MODEL=FakeCfgNode(TYPE=arch))
    path = tmp_path / "rsp-ckpt.pth"
    torch.save({"model": state, "config": cfg, "epoch": 99, "max_accuracy": 98.5}, path)
    loaded = load_rsp_backbone(path, arch)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(x), loaded(x), strict=True):
            # the per-stage norms are not in RSP's classification files: equal only when they were loaded
            if arch == "rsp_resnet50":
                assert torch.equal(a, b)
    # Every tensor present in the file was loaded as is.
    own = loaded.state_dict()
    for k, v in state.items():
        key = k[len("module.") :]
        if key in own:
            assert torch.equal(own[key], v), key


@pytest.mark.parametrize("arch", ["rsp_swin_t", "rsp_vitaev2_s"])
def test_rsp_backbone_file_without_index_buffers_loads(arch: str, tmp_path: Path) -> None:
    """Files without ``relative_position_index`` (ViTAE's loader deletes them anyway) and with mask buffers load."""
    torch.manual_seed(4)
    source = build_backbone(arch)
    state = {
        f"backbone.{k}": v
        for k, v in source.state_dict().items()
        if not k.startswith("norm") and not k.endswith("relative_position_index")
    }
    state["backbone.layers.0.blocks.1.attn_mask" if arch == "rsp_swin_t" else "backbone.layers.0.NC.0.attn_mask"] = (
        torch.zeros(4, 49, 49)
    )
    path = tmp_path / "rsp-ckpt.pth"
    torch.save({"model": state}, path)
    own = load_rsp_backbone(path, arch).state_dict()
    index_keys = [k for k in own if k.endswith("relative_position_index")]
    assert index_keys and all(torch.equal(own[k], source.state_dict()[k]) for k in index_keys)
    weight = next(k for k in state if k.endswith("qkv.weight"))
    assert torch.equal(own[weight[len("backbone.") :]], state[weight])


def test_rsp_backbone_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    state = build_backbone("rsp_resnet50").state_dict()
    state["layer9.weight"] = torch.zeros(1)
    path = tmp_path / "x.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError, match=r"layer9\.weight"):
        load_rsp_backbone(path, "rsp_resnet50")


class _Exploit:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.target}",))


def test_reading_a_checkpoint_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "config": _Exploit(str(marker))}, path)
    ckpt = read_checkpoint(path)
    assert not marker.exists()
    assert torch.equal(ckpt["model"]["w"], torch.zeros(2))


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = _seeded("lite_resnet", 5, aux=True)
    info = ModelInfo(
        arch="lite_resnet",
        num_classes=5,
        class_names=("a", "b", "c", "d", "e"),
        colors=((1, 2, 3),) * 5,
        gsd_m=0.3,
        description="test",
    )
    path = tmp_path / "m.rspmodel"
    save_model_file(path, model.state_dict(), info)
    assert read_model_info(path) == info
    loaded, info2 = load_model_file(path)
    assert info2 == info and loaded.auxiliary_head is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_import_and_info_cli(tmp_path: Path) -> None:
    model = _seeded("lite_resnet", 5)
    ckpt = tmp_path / "upernet_lite_potsdam.pth"
    torch.save(
        {"meta": {"CLASSES": ["imp", "bld", "lv", "tree", "car", "clutter"]}, "state_dict": model.state_dict()}, ckpt
    )
    out = tmp_path / "lite.rspmodel"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "engine", "import", str(ckpt), "--arch", "lite_resnet", "--dataset", "potsdam"]
    proc = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = read_model_info(out)
    assert info.class_names == ("imp", "bld", "lv", "tree", "car")  # the 5-class head: clutter is not a class
    assert info.bands == ("nir", "red", "green") and info.gsd_m == 0.05 and info.tile_size == 512
    assert len(info.provenance["sha256"]) == 64 and info.provenance["source"] == ckpt.name
    again = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "engine", "info", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert shown.returncode == 0 and "lite_resnet" in shown.stdout and "tree" in shown.stdout


@pytest.mark.parametrize(("arch", "size"), [("lite_resnet", (2, 96, 160)), ("rsp_resnet50", (1, 200, 264))])
def test_lowres_fusion_computes_the_reference_head(arch: str, size: tuple[int, int, int]) -> None:
    """The fast head path (taps before upsampling) equals concat-upsample-conv up to float rounding, incl. borders
    and odd level sizes (200×264 gives 1/32 maps of 7×9)."""
    torch.manual_seed(0)
    model = build_segmentor(arch, 5, aux_head=False).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(size[0], 3, size[1], size[2])
    with torch.inference_mode():
        reference = model(x)
        fast = model.set_lowres_fusion(True)(x)
        again = model.set_lowres_fusion(False)(x)
    assert torch.equal(again, reference)  # switching back restores the reference's float order exactly
    scale = reference.abs().max().item()
    assert scale > 0
    assert (fast - reference).abs().max().item() <= 1e-5 * scale
    assert (fast.argmax(1) == reference.argmax(1)).float().mean().item() > 0.999


def test_lowres_fusion_is_eval_only() -> None:
    model = build_segmentor("lite_resnet", 3, aux_head=False).set_lowres_fusion(True).train()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()  # the training path is the reference one (concat + conv), so gradients flow as usual
    assert model.decode_head.fpn_bottleneck.conv.weight.grad is not None


@pytest.mark.parametrize("arch", ["lite_resnet", "rsp_resnet50", "rsp_vitaev2_s"])
def test_batchnorm_folding_computes_the_same_network(arch: str) -> None:
    """Folded BatchNorm gives the unfolded network's logits up to float rounding; every BatchNorm of the ResNets and
    of the head is folded (counted independently from the module tree), and a model in training mode is refused."""
    from engine.models.folding import fold_batchnorm

    torch.manual_seed(0)
    model = build_segmentor(arch, 5, aux_head=False).eval()
    for module in model.modules():  # non-trivial statistics and affine parameters, or folding would be a no-op
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    side = 224 if arch == "rsp_vitaev2_s" else 96
    x = torch.randn(1, 3, side, side)
    with torch.inference_mode():
        reference = model(x)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model.train())
    folded = fold_batchnorm(model.eval())
    remaining = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        out = model(x)
    assert folded == n_bn - remaining > 0
    if arch != "rsp_vitaev2_s":
        assert remaining == 0
    scale = reference.abs().max().item()
    assert (out - reference).abs().max().item() <= 1e-5 * scale
