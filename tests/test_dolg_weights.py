"""The released DOLG weights onto our module: state dicts built here with the names and shapes of the authors'
pycls model (as the `dolg` package on PyPI defines them: globalmodel.stem/s1..s4, localmodel, pool_g, fc_t, fc,
desc_cls), in both layouts, mapped key by key with strict checks; and a local copy of a published file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.core.download import sha256_of
from benchmarks.core.errors import InputError
from methods.dolg import (
    DOLGConfig,
    DOLGMethod,
    convert_released_state,
    read_released_state,
    released_architecture,
)
from methods.weights import resolve_weights

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{k}": (channels,) for k in ("weight", "bias", "running_mean",
                                                                                  "running_var")}
    return {**shapes, f"{prefix}.num_batches_tracked": ()}


def released_shapes(depth: int, multi_atrous: bool = False, classes: int = 7) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the authors' DOLG state dict (pycls ResNet, bottleneck blocks, stride on the 3 x 3)."""
    shapes = {"globalmodel.stem.conv.weight": (64, 3, 7, 7), **_bn("globalmodel.stem.bn", 64)}
    w_in = 64
    for stage, blocks in enumerate(DEPTHS[depth], start=1):
        w_b, w_out = 64 * 2 ** (stage - 1), 256 * 2 ** (stage - 1)
        for block in range(1, blocks + 1):
            p = f"globalmodel.s{stage}.b{block}"
            if block == 1:
                shapes |= {f"{p}.proj.weight": (w_out, w_in, 1, 1), **_bn(f"{p}.bn", w_out)}
            shapes |= {f"{p}.f.a.weight": (w_b, w_in if block == 1 else w_out, 1, 1), **_bn(f"{p}.f.a_bn", w_b),
                       f"{p}.f.b.weight": (w_b, w_b, 3, 3), **_bn(f"{p}.f.b_bn", w_b),
                       f"{p}.f.c.weight": (w_out, w_b, 1, 1), **_bn(f"{p}.f.c_bn", w_out)}
        w_in = w_out
    shapes |= {"localmodel.conv1.weight": (1024, 1024, 1, 1), "localmodel.conv1.bias": (1024,),
               **_bn("localmodel.bn", 1024), "localmodel.conv2.weight": (1, 1024, 1, 1), "localmodel.conv2.bias": (1,),
               "pool_g.p": (1,), "fc_t.weight": (1024, 2048), "fc_t.bias": (1024,), "fc.weight": (512, 2048),
               "fc.bias": (512,), "desc_cls.weight": (classes, 512), "desc_cls.t": (1,)}
    if multi_atrous:
        shapes |= {"localmodel.aspp.aspp.0.weight": (512, 1024, 1, 1), "localmodel.aspp.aspp.0.bias": (512,),
                   **{f"localmodel.aspp.aspp.{i}.weight": (512, 1024, 3, 3) for i in (1, 2, 3)},
                   **{f"localmodel.aspp.aspp.{i}.bias": (512,) for i in (1, 2, 3)},
                   "localmodel.aspp.im_pool.1.weight": (512, 1024, 1, 1), "localmodel.aspp.im_pool.1.bias": (512,),
                   "localmodel.aspp.conv_after.0.weight": (1024, 2560, 1, 1), "localmodel.aspp.conv_after.0.bias":
                   (1024,)}
    return shapes


def released_state(depth: int = 50, multi_atrous: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in released_shapes(depth, multi_atrous).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[name] = torch.randn(shape, generator=generator) * 0.05
    return state


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    return released_state(50)


@pytest.fixture(scope="module")
def converted(r50) -> DOLGMethod:
    return convert_released_state(DOLGMethod, r50, DOLGConfig(), "r50.pt")


def test_every_released_tensor_lands_where_it_belongs(r50, converted):
    own = converted.state_dict()
    assert converted.config.backbone == "resnet50" and converted.local.multi_atrous is None
    expect = {"globalmodel.s3.b6.f.b.weight": "backbone.layer3.5.conv2.weight",
              "globalmodel.s2.b1.proj.weight": "backbone.layer2.0.downsample.0.weight",
              "globalmodel.s2.b1.bn.running_var": "backbone.layer2.0.downsample.1.running_var",
              "globalmodel.s4.b3.f.c_bn.weight": "backbone.layer4.2.bn3.weight",
              "globalmodel.stem.bn.running_mean": "backbone.bn1.running_mean",
              "localmodel.conv1.weight": "local.conv.weight", "localmodel.bn.bias": "local.bn.bias",
              "localmodel.conv2.bias": "local.score.bias", "pool_g.p": "gem.p",
              "fc_t.weight": "global_fc.weight", "fc.bias": "fusion_fc.bias"}
    for theirs, ours in expect.items():
        assert torch.equal(own[ours], r50[theirs]), theirs
    # the authors' network reads BGR: the first convolution's input channels are reversed for our RGB input
    assert torch.equal(own["backbone.conv1.weight"], r50["globalmodel.stem.conv.weight"][:, [2, 1, 0]])
    n_used = len(r50) - 2  # all but the ArcFace head
    assert len(own) == n_used and sum(t.numel() for t in own.values()) == \
        sum(t.numel() for k, t in r50.items() if not k.startswith("desc_cls"))


def test_rgb_input_to_the_converted_model_is_bgr_input_to_the_released_one(r50, converted):
    unflipped = DOLGMethod(DOLGConfig()).eval()
    unflipped.load_state_dict({**converted.state_dict(), "backbone.conv1.weight": r50["globalmodel.stem.conv.weight"]})
    rgb = torch.randn(1, 3, 64, 64)
    assert torch.allclose(converted.eval()(rgb), unflipped(rgb.flip(1)), atol=1e-5)


def test_the_pycls_checkpoint_layout_and_the_plain_state_dict_read_the_same(tmp_path, r50):
    plain, checkpoint = tmp_path / "r50_dolg_512.pt", tmp_path / "r50_dolg_512.pyth"
    torch.save(r50, plain)
    torch.save({"epoch": 99, "model_state": r50, "cfg": "MODEL:\n  DEPTH: 50\n"}, checkpoint)
    for path in (plain, checkpoint):
        state = read_released_state(path)
        assert state.keys() == r50.keys() and all(torch.equal(state[k], r50[k]) for k in r50)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable PyTorch file"):
        read_released_state(tmp_path / "junk.pt")
    torch.save({"model_state": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(InputError, match="expected a DOLG state dict"):
        read_released_state(tmp_path / "odd.pt")


def test_depth_and_multi_atrous_come_from_the_file():
    state = released_state(50, multi_atrous=True, seed=1)
    model = convert_released_state(DOLGMethod, state, DOLGConfig(), "r50_ma.pt")
    assert model.local.multi_atrous is not None
    assert torch.equal(model.state_dict()["local.multi_atrous.project.0.weight"],
                       state["localmodel.aspp.conv_after.0.weight"])
    assert torch.equal(model.state_dict()["local.multi_atrous.branches.3.bias"], state["localmodel.aspp.aspp.3.bias"])
    assert released_architecture(dict.fromkeys(released_shapes(101), torch.empty(0)), "r101.pt") == \
        ("resnet101", False)
    five_blocks = {k: torch.empty(0) for k in released_shapes(50) if not k.startswith("globalmodel.s3.b6.")}
    with pytest.raises(InputError, match=r"blocks per stage \(3, 4, 5, 3\)"):
        released_architecture(five_blocks, "odd.pt")


def test_one_error_lists_every_missing_unused_and_misshaped_tensor(r50):
    broken = dict(r50)
    del broken["localmodel.conv2.bias"], broken["fc_t.weight"]
    broken["extra.weight"] = torch.zeros(3)
    broken["fc.weight"] = torch.zeros(512, 1024)
    with pytest.raises(InputError) as caught:
        convert_released_state(DOLGMethod, broken, DOLGConfig(), "broken.pt")
    message = str(caught.value)
    assert "broken.pt" in message
    assert "missing: fc_t.weight (for global_fc.weight), localmodel.conv2.bias (for local.score.bias)" in message
    assert "unused: extra.weight" in message
    assert "fc.weight: file (512, 1024) vs model (512, 2048)" in message
    # BN step counters are not needed at test time: a file without them converts
    converted = convert_released_state(DOLGMethod, {k: v for k, v in r50.items()
                                                    if not k.endswith("num_batches_tracked")}, DOLGConfig(), "x")
    assert torch.equal(converted.state_dict()["fusion_fc.weight"], r50["fc.weight"])


@pytest.mark.slow
def test_a_local_copy_of_a_published_file_is_known_by_its_sha256(tmp_path, r50, monkeypatch):
    path = tmp_path / "downloads" / "r50_dolg_512.pt"
    path.parent.mkdir()
    torch.save(r50, path)

    spec = DOLGMethod.weights["resnet50.gldv2"]
    monkeypatch.setitem(DOLGMethod.weights, "resnet50.gldv2", type(spec)(**{**spec.__dict__,
                                                                            "sha256": sha256_of(path)}))
    root = tmp_path / "root"
    loaded = resolve_weights(DOLGMethod, str(path), root)
    assert loaded.name == "resnet50.gldv2" and loaded.sha256 == sha256_of(path)
    assert (root / "weights" / "dolg" / "resnet50.gldv2.pt").exists()  # converted once, cached
    # a file of the released layout that is not a published one is converted and named after its trunk
    other = tmp_path / "my_dolg.pt"
    torch.save({"model_state": released_state(50, seed=3)}, other)
    assert resolve_weights(DOLGMethod, str(other), root).name == "resnet50.my_dolg"
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="neither a checkpoint of this suite .* nor released dolg weights"):
        resolve_weights(DOLGMethod, str(tmp_path / "junk.pt"), root)


def test_the_published_weights_are_pinned():
    for name, spec in DOLGMethod.weights.items():
        assert spec.url is not None and spec.url.startswith("https://huggingface.co/Shiro/DOLG/resolve/main/")
        assert spec.sha256 is not None and len(spec.sha256) == 64, name
        assert Path(spec.url).name == {"resnet50.gldv2": "r50_dolg_512.pt", "resnet101.gldv2": "r101_dolg_512.pt"}[name]
