"""ImageNet initialisations: the packaged EfficientNet-Lite0 classifies real photos, every layout's converter fills
a timm trunk tensor for tensor from a file built in that layout, bad files and names are refused naming the file and
the key, and ``settle`` / ``train`` decide what a run starts from before any work, offline."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from benchmarks.commands.main import cli
from benchmarks.core.acquire import AcquireOptions
from benchmarks.core.download import sha256_of
from benchmarks.core.errors import InputError
from benchmarks.core.timm_import import import_timm, import_torchvision
from benchmarks.training.initialise import settle
from methods import initialisation as inits
from methods.base import IMAGENET_MEAN, IMAGENET_STD
from methods.layers.backbone import create_backbone
from methods.netvlad import NetVLADConfig, NetVLADMethod
from methods.weights import load_checkpoint

LITE0 = "efficientnet_lite0.in1k"
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]


@cache
def _photo(name: str) -> Image.Image:
    """A photograph shipped by scikit-image, scikit-learn or matplotlib, as RGB."""
    if name == "grace_hopper.jpg":
        from matplotlib.cbook import get_sample_data

        return Image.open(get_sample_data(name, asfileobj=False)).convert("RGB")
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name))
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _batch(image: Image.Image, normalisation: Normalisation) -> torch.Tensor:
    """(1, 3, 224, 224): shorter side resized to 224 (bicubic), centre crop, normalised by (mean, std)."""
    scale = 224 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalisation)
    return ((pixels - mean) / std)[None]


@pytest.fixture(scope="module")
def lite0_classifier() -> nn.Module:
    """timm's full EfficientNet-Lite0 classifier filled from the packaged file (its ``_fc`` head included)."""
    resolved = inits.resolve(LITE0, "efficientnet_lite0", Path("/nonexistent"))
    model = import_timm().create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(inits.trunk_state(resolved.spec, inits.read_state(resolved.path), model, resolved.path))
    return model.eval()


def _probabilities(model: nn.Module, photos: list[str], normalisation: Normalisation) -> torch.Tensor:
    """(len(photos), 1000) ImageNet class probabilities."""
    with torch.no_grad():
        return model(torch.cat([_batch(_photo(photo), normalisation) for photo in photos])).softmax(dim=1)


def test_the_packaged_lite0_is_found_offline_and_is_the_declared_file(tmp_path):
    resolved = inits.resolve(LITE0, "efficientnet_lite0", tmp_path / "empty root")
    assert resolved.path == inits.packaged_file(inits.INITIALISATIONS[LITE0])
    assert resolved.path.name == "efficientnet-lite0-57934424.pth" and resolved.path.is_file()
    assert sha256_of(resolved.path) == resolved.sha256 == inits.INITIALISATIONS[LITE0].sha256 == (
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
    assert not (tmp_path / "empty root").exists()
    copy = tmp_path / "renamed.pth"  # a local copy is recognised by its sha256
    shutil.copyfile(resolved.path, copy)
    assert inits.resolve(str(copy), "vgg16", tmp_path).name == LITE0


def test_lite0_calls_grace_hopper_a_military_uniform(lite0_classifier):
    from timm.data import ImageNetInfo

    probabilities = _probabilities(lite0_classifier, ["grace_hopper.jpg"], HALF)[0]
    top5 = probabilities.topk(5).indices.tolist()
    assert top5[0] == 652 and ImageNetInfo().index_to_description(652) == "military uniform"
    # then suit, Windsor tie, bow tie, bolo tie
    assert set(top5) == {652, 834, 906, 457, 451}
    assert probabilities[652].item() == pytest.approx(0.27, abs=0.03)


# photo -> the ImageNet classes naming what it shows
EXPECTED = {"chelsea": {281, 282, 283, 284, 285},  # tabby, tiger, Persian, Siamese, Egyptian cat
            "coffee": {967, 968, 504},             # espresso, cup, coffee mug
            "rocket": {657, 744},                  # missile, projectile
            "grace_hopper.jpg": {652},             # military uniform
            "china.jpg": {698}}                    # palace


def test_mean_std_half_ranks_the_expected_class_first_where_imagenets_does_not(lite0_classifier):
    probabilities = {norm: _probabilities(lite0_classifier, list(EXPECTED), norm) for norm in (HALF, IMAGENET)}
    top1 = {norm: dict(zip(EXPECTED, p.argmax(1).tolist())) for norm, p in probabilities.items()}
    assert all(top1[HALF][photo] in classes for photo, classes in EXPECTED.items())
    misses = {photo: top for photo, top in top1[IMAGENET].items() if top not in EXPECTED[photo]}
    assert misses == {"grace_hopper.jpg": 834, "china.jpg": 442}  # suit; bell cote
    expected = {norm: [p[i, sorted(classes)].sum().item() for i, classes in enumerate(EXPECTED.values())]
                for norm, p in probabilities.items()}
    less = {photo for photo, half, imagenet in zip(EXPECTED, expected[HALF], expected[IMAGENET]) if half < imagenet}
    assert less == {"coffee", "rocket"}  # not more probability on every photo


def _torchvision_state(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ``arch`` state dict (head included) with seeded random values, so equality means something."""
    generator = torch.Generator().manual_seed(0)
    state = getattr(import_torchvision().models, arch)(weights=None).state_dict()
    return {key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
            for key, value in state.items()}


def _full_key(trunk_key: str) -> str:
    """timm's features_only VGG says ``features_0.`` where the full model says ``features.0.``."""
    return re.sub(r"^features_(\d+)\.", r"features.\1.", trunk_key)


def _assert_filled(trunk: nn.Module, filled: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor],
                   changed: Callable[[str, torch.Tensor], torch.Tensor] = lambda key, tensor: tensor) -> None:
    """Every trunk tensor is the torchvision-named ``source`` tensor (as ``changed`` says), and the trunk takes it."""
    assert filled.keys() == trunk.state_dict().keys()
    for key, tensor in filled.items():
        assert torch.equal(tensor, changed(key, source[_full_key(key)])), key
    trunk.load_state_dict(filled, strict=True)


@pytest.mark.parametrize("name", ["vgg16.in1k_torchvision", "resnet101.in1k_torchvision"])
def test_torchvision_files_fill_the_trunk_and_leave_the_head(name):
    spec = inits.INITIALISATIONS[name]
    source = _torchvision_state(spec.backbone)
    assert any(key.startswith(("fc.", "classifier.")) for key in source)
    trunk = create_backbone(spec.backbone, (4,))
    _assert_filled(trunk, inits.trunk_state(spec, source, trunk, name), source)


def test_cirtorch_features_files_fill_the_trunk(tmp_path):
    resnet = import_torchvision().models.resnet101(weights=None)
    source = _torchvision_state("resnet101")
    resnet.load_state_dict(source)
    path = tmp_path / "imagenet-caffe-resnet101-features.pth"
    torch.save(nn.Sequential(*list(resnet.children())[:-2]).state_dict(), path)  # cirtorch's "features" trunk
    state = inits.read_state(path)
    assert {"0.weight", "1.running_mean", "4.0.conv1.weight", "7.2.bn3.bias"} <= state.keys()
    spec = inits.INITIALISATIONS["resnet101.in1k_caffe"]
    trunk = create_backbone("resnet101", (4,))
    _assert_filled(trunk, inits.trunk_state(spec, state, trunk, path), source)


_PYCLS_PARTS = {"conv1": "f.a", "bn1": "f.a_bn", "conv2": "f.b", "bn2": "f.b_bn", "conv3": "f.c", "bn3": "f.c_bn",
                "downsample.0": "proj", "downsample.1": "bn"}


def _pycls_key(key: str) -> str:
    """A torchvision ResNet key as pycls names it: ``layer1.0.conv1.weight`` -> ``s1.b1.f.a.weight``."""
    for ours, theirs in (("conv1.", "stem.conv."), ("bn1.", "stem.bn."), ("fc.", "head.fc.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.\d)\.(\w+)", key)
    assert match, key
    stage, block, part, tensor = match.groups()
    return f"s{stage}.b{int(block) + 1}.{_PYCLS_PARTS[part]}.{tensor}"


def test_pycls_checkpoints_fill_the_trunk_with_the_first_conv_taking_rgb(tmp_path):
    source = _torchvision_state("resnet50")
    path = tmp_path / "R-50-1x64d_dds_8gpu.pyth"
    model_state = {_pycls_key(key): value for key, value in source.items()}
    assert {"stem.conv.weight", "s1.b1.proj.weight", "s1.b1.bn.running_var", "s4.b3.f.c_bn.weight",
            "head.fc.bias"} <= model_state.keys()
    torch.save({"epoch": 99, "model_state": model_state, "optimizer_state": {"state": {}, "param_groups": []}}, path)
    spec = inits.INITIALISATIONS["resnet50.in1k_pycls"]
    assert spec.bgr
    rgb = create_backbone("resnet50", (4,))
    _assert_filled(rgb, inits.trunk_state(spec, inits.read_state(path), rgb, path), source,
                   lambda key, tensor: tensor.flip(1) if key == "conv1.weight" else tensor)
    bgr = create_backbone("resnet50", (4,))
    bgr.load_state_dict(inits.trunk_state(dataclasses.replace(spec, bgr=False), model_state, bgr, path))
    image = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rgb.conv1(image), bgr.conv1(image.flip(1)))  # RGB to ours = BGR to theirs
    assert not torch.allclose(rgb.conv1(image), bgr.conv1(image))


def test_lukemelas_efficientnet_fills_timms_trunk_from_the_real_file(lite0_classifier):
    spec = inits.INITIALISATIONS[LITE0]
    path = inits.packaged_file(spec)
    state = inits.read_state(path)
    names = inits.LAYOUTS[spec.layout][0](state)
    assert sorted(names.values()) == sorted(lite0_classifier.state_dict())  # every tensor of the classifier
    expected = {"_fc.weight": "classifier.weight", "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
                "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
                "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
                "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight"}
    assert {key: names[key] for key in expected} == expected
    trunk = create_backbone("efficientnet_lite0", (4,))
    filled = inits.trunk_state(spec, state, trunk, path)
    _assert_filled(trunk, filled, lite0_classifier.state_dict())


def _tiny_netvlad(backbone: str) -> NetVLADMethod:
    return NetVLADMethod(NetVLADConfig(backbone=backbone, drop_final_relu=False, num_clusters=4, whiten_dim=16))


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("_blocks.3._depthwise_conv.weight"), r"missing: blocks\.2\.0\.conv_dw\.weight"),
    (lambda s: s.update({"_conv_stem.weight": torch.zeros(32, 3, 5, 5)}),
     r"shape mismatch: _conv_stem\.weight: file \(32, 3, 5, 5\) vs trunk \(32, 3, 3, 3\)"),
    (lambda s: s.update({"_blocks.16._depthwise_conv.weight": torch.zeros(1)}),
     r"unused: _blocks\.16\._depthwise_conv\.weight"),
])
def test_a_file_not_in_the_layout_is_refused_naming_it_and_the_key(tmp_path, change, message):
    state = inits.read_state(inits.packaged_file(inits.INITIALISATIONS[LITE0]))
    change(state)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    resolved = inits.resolve(str(path), "efficientnet_lite0", tmp_path)
    assert resolved.name == "file:lite0.pth" and resolved.spec == inits.INITIALISATIONS[LITE0]
    model = _tiny_netvlad("efficientnet_lite0")
    before = {key: value.clone() for key, value in model.backbone.state_dict().items()}
    with pytest.raises(InputError, match=f"not a efficientnet_lite0 in the lukemelas_efficientnet layout:\n  "
                                         f"{message}") as error:
        inits.load_initialisation(model, resolved)
    assert error.value.path == str(path)
    assert all(torch.equal(before[key], value) for key, value in model.backbone.state_dict().items())
    assert model.protocol.mean == IMAGENET_MEAN


def test_non_weights_files_unknown_names_and_missing_files_are_refused(tmp_path):
    text, listed = tmp_path / "notes.pth", tmp_path / "list.pth"
    text.write_text("not weights")
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InputError, match="not a readable PyTorch weights file") as error:
        inits.read_state(text)
    assert error.value.path == str(text)
    with pytest.raises(InputError, match="expected a state dict of tensors"):
        inits.read_state(listed)
    for name in ("resnet50.in1k_nowhere", str(tmp_path / "missing.pth")):
        with pytest.raises(InputError, match=r"neither a known initialisation \(efficientnet_lite0\.in1k, "):
            inits.resolve(name, "resnet50", tmp_path)
    with pytest.raises(InputError, match="no known initialisation of a resnet18 trunk says how to read"):
        inits.resolve(str(text), "resnet18", tmp_path)


def test_a_local_file_is_read_in_the_layout_of_the_initialisation_released_under_its_name(tmp_path):
    layouts = {}
    for name in ("resnet101-63fe2227.pth", "R-101-1x64d_dds_8gpu.pyth", "r101.pth"):
        (tmp_path / name).write_bytes(name.encode())
        resolved = inits.resolve(str(tmp_path / name), "resnet101", tmp_path)
        assert resolved.name == f"file:{name}" and resolved.sha256 == sha256_of(tmp_path / name)
        layouts[name] = resolved.spec.layout
    assert layouts == {"resnet101-63fe2227.pth": "torchvision", "R-101-1x64d_dds_8gpu.pyth": "pycls_resnet",
                       "r101.pth": "cirtorch_features"}  # otherwise the first known: resnet101.in1k_caffe


def test_loading_into_another_backbone_is_refused_and_the_right_one_sets_the_normalisation(tmp_path):
    resolved = inits.resolve(LITE0, "efficientnet_lite0", tmp_path)
    with pytest.raises(InputError, match="is a efficientnet_lite0 trunk, the model's backbone is resnet18"):
        inits.load_initialisation(_tiny_netvlad("resnet18"), resolved)
    model = _tiny_netvlad("efficientnet_lite0")
    inits.load_initialisation(model, resolved)
    assert (model.protocol.mean, model.protocol.std) == HALF and NetVLADMethod.protocol.mean == IMAGENET_MEAN
    stem = inits.read_state(resolved.path)["_conv_stem.weight"]
    assert torch.equal(model.backbone.state_dict()["conv_stem.weight"], stem)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request fails to connect, as on a machine without internet."""
    def refuse(request: object, *args: object, **kwargs: object) -> object:
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_settle_none_a_named_initialisation_and_a_conflict(tmp_path):
    start = settle(NetVLADMethod, "none", {"num_clusters": 8}, tmp_path, AcquireOptions())
    assert start.initialisation is None
    assert start.config_values == {"backbone": "vgg16", "drop_final_relu": True, "num_clusters": 8}
    assert start.record() == {"name": "none"}
    # a random trunk of another kind gets what the method needs of it too
    start = settle(NetVLADMethod, "none", {"backbone": "efficientnet_lite0"}, tmp_path, AcquireOptions())
    assert start.config_values == {"backbone": "efficientnet_lite0", "drop_final_relu": False}
    start = settle(NetVLADMethod, LITE0, {"num_clusters": 8}, tmp_path, AcquireOptions())
    assert start.config_values == {"backbone": "efficientnet_lite0", "drop_final_relu": False, "num_clusters": 8}
    assert start.initialisation is not None
    assert start.initialisation.path == inits.packaged_file(inits.INITIALISATIONS[LITE0])
    assert start.record() == {"name": LITE0, "sha256": inits.INITIALISATIONS[LITE0].sha256,
                              "backbone": "efficientnet_lite0", "source": inits.INITIALISATIONS[LITE0].source}
    with pytest.raises(InputError, match="efficientnet_lite0 trunk, --config backbone says resnet18: drop one"):
        settle(NetVLADMethod, LITE0, {"backbone": "resnet18"}, tmp_path, AcquireOptions())
    with pytest.raises(InputError, match="netvlad knows no ImageNet initialisation of a resnet18 trunk"):
        settle(NetVLADMethod, None, {"backbone": "resnet18"}, tmp_path, AcquireOptions())
    # the one known initialisation of a trunk is its default, and brings what the trunk needs
    start = settle(NetVLADMethod, None, {"backbone": "efficientnet_lite0"}, tmp_path, AcquireOptions())
    assert start.initialisation is not None and start.initialisation.name == LITE0
    assert start.config_values == {"backbone": "efficientnet_lite0", "drop_final_relu": False}
    assert not (tmp_path / "weights").exists()


def test_settle_offline_without_the_recipes_file_says_how_to_provide_it(tmp_path, offline):
    root = tmp_path / "data"
    with pytest.raises(InputError) as error:
        settle(NetVLADMethod, None, {}, root, AcquireOptions())
    for expected in ("could not fetch", "initialisation vgg16.in1k_torchvision: vgg16-397923af.pth "
                     "(download.pytorch.org: URLError", f"{root}/weights/<method or init>/<file>", "--init PATH",
                     "--init efficientnet_lite0.in1k is an ImageNet trunk installed with the suite"):
        assert expected in error.value.message, expected
    assert not root.exists()
    placed = inits.folder(root) / "vgg16-397923af.pth"  # a file already under the data root is used as it is
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"placed by hand")
    start = settle(NetVLADMethod, None, {}, root, AcquireOptions())
    assert start.initialisation is not None and start.initialisation.path == placed
    assert start.config_values == {"backbone": "vgg16", "drop_final_relu": True}


def _train(root: Path, out: Path, *args: str) -> tuple[int, str]:
    """``train netvlad`` for 0 steps on synth_places' small val split (k-means and whitening: 100 images)."""
    result = CliRunner().invoke(cli, ["train", "netvlad", "--dataset", "synth_places", "--split", "val", "--steps",
                                      "0", *args, "--config", "num_clusters=4", "--config", "whiten_dim=16",
                                      "--set", "cluster_images=4", "--name", "efficientnet_lite0.test",
                                      "--out", str(out), "--root", str(root), "--device", "cpu"])
    output = result.output + result.stderr
    assert "Traceback" not in output, output
    return result.exit_code, output


def test_train_stops_before_any_work_without_the_initialisation(tmp_path, offline):
    root, out = tmp_path / "data", tmp_path / "w.pt"
    code, output = _train(root, out)
    assert code == 2 and "initialisation vgg16.in1k_torchvision: vgg16-397923af.pth" in output
    assert "--init efficientnet_lite0.in1k" in output
    assert not root.exists() and not out.exists() and not Path(f"{out}.json").exists()


@pytest.mark.slow
def test_train_from_lite0_records_what_it_started_from(embedded_root, tmp_path):
    out = tmp_path / "w.pt"
    code, output = _train(embedded_root, out, "--init", LITE0)
    assert code == 0, output
    sidecar = json.loads(Path(f"{out}.json").read_text())
    spec = inits.INITIALISATIONS[LITE0]
    assert sidecar["origin"]["trunk_initialisation"] == {"name": LITE0, "sha256": spec.sha256,
                                                         "backbone": "efficientnet_lite0", "source": spec.source}
    assert "alpha" in sidecar["origin"]["initialisation"]  # the fitted clusters' own initialisation
    assert (sidecar["mean"], sidecar["std"]) == ([0.5] * 3, [0.5] * 3)
    loaded = load_checkpoint(NetVLADMethod, out)
    assert loaded.trunk_initialisation == sidecar["origin"]["trunk_initialisation"]  # results made from it say so
    model = loaded.model
    assert model.config.backbone == "efficientnet_lite0" and not model.config.drop_final_relu
    stem = inits.read_state(inits.packaged_file(spec))["_conv_stem.weight"]
    assert torch.equal(model.backbone.state_dict()["conv_stem.weight"], stem)  # 0 steps: the trunk as loaded
