"""DOLG: the layers against hand-computed cases and invariants, the model's shapes, norms, invariances and
gradients, ArcFace's logits, and the mapping of the released weights onto our module."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.dolg import DOLGConfig, DOLGMethod
from methods.layers.gem import GeM
from methods.layers.orthogonal_fusion import LocalBranch, MultiAtrous, orthogonal_component
from methods.losses import ArcFace

TINY = DOLGConfig(backbone="resnet18", dim=32)


@pytest.fixture(scope="module")
def model() -> DOLGMethod:
    torch.manual_seed(0)
    return DOLGMethod(TINY).eval()


def test_gem_is_the_generalised_mean_and_spans_average_to_max():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    assert GeM(p=3.0)(x).item() == pytest.approx(((1 + 8 + 27 + 64) / 4) ** (1 / 3))
    assert GeM(p=1.0)(x).item() == pytest.approx(2.5)
    assert 3.8 < GeM(p=50.0)(x).item() < 4.0  # towards the maximum (float32 caps p)
    assert GeM()(torch.full((2, 5, 3, 3), -1.0)).shape == (2, 5)  # negatives are clamped, not NaN
    assert torch.isfinite(GeM()(torch.full((1, 1, 2, 2), -1.0))).all()


def test_the_local_part_is_orthogonal_to_the_global_feature_and_keeps_the_rest():
    torch.manual_seed(1)
    local, global_ = torch.randn(3, 16, 4, 5, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    orthogonal = orthogonal_component(local, global_)
    assert (orthogonal * global_[:, :, None, None]).sum(dim=1).abs().max() < 1e-12
    # what was removed is parallel to the global feature: local = orthogonal + c * global at every position
    removed = local - orthogonal
    coefficient = (removed * global_[:, :, None, None]).sum(1) / global_.pow(2).sum(1)[:, None, None]
    assert torch.allclose(removed, coefficient[:, None] * global_[:, :, None, None])
    # a local feature already orthogonal stays as it is; one parallel vanishes
    g = torch.tensor([[1.0, 0.0]])
    assert torch.equal(orthogonal_component(torch.tensor([[0.0, 2.0]]).view(1, 2, 1, 1), g).flatten(),
                       torch.tensor([0.0, 2.0]))
    assert torch.equal(orthogonal_component(torch.tensor([[3.0, 0.0]]).view(1, 2, 1, 1), g).flatten(),
                       torch.tensor([0.0, 0.0]))


def test_the_local_branch_is_softplus_attention_times_unit_features():
    torch.manual_seed(2)
    branch = LocalBranch(8, 6).eval()
    x = torch.randn(2, 8, 3, 4)
    attention, features = branch.attention_and_features(x)
    expected = F.normalize(branch.bn(branch.conv(x)), dim=1)
    assert torch.allclose(features, expected) and torch.allclose(features.norm(dim=1), torch.ones(2, 3, 4))
    assert attention.shape == (2, 1, 3, 4) and (attention > 0).all()
    assert torch.allclose(branch(x).norm(dim=1, keepdim=True), attention, atol=1e-6)


def test_multi_atrous_keeps_the_size_and_its_pooling_branch_sees_the_whole_image():
    torch.manual_seed(3)
    block = MultiAtrous(8, 4, 6, dilations=(1, 2)).eval()
    x = torch.randn(1, 8, 5, 7)
    assert block(x).shape == (1, 6, 5, 7) and len(block.branches) == 3
    pooled = block.image_pool(x)
    assert torch.allclose(pooled, F.relu(block.image_pool[1](x.mean(dim=(2, 3), keepdim=True))))


def test_shapes_unit_norm_and_channels_from_the_trunk(model):
    out = model(torch.randn(3, 3, 64, 80))
    assert out.shape == (3, 32) == (3, model.descriptor_dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    # resnet18: res4 256, res5 512 channels (ResNet-50 would give the paper's 1024 / 2048)
    assert model.local.conv.in_channels == 256 and model.global_fc.in_features == 512
    assert model.global_fc.out_features == 256 and model.fusion_fc.in_features == 512
    assert model.gem.p.requires_grad and model.gem.p.item() == 3.0


def test_the_multi_atrous_block_is_a_switch_off_by_default():
    assert DOLGConfig().multi_atrous is False and DOLGMethod(TINY).local.multi_atrous is None
    with_block = DOLGMethod(DOLGConfig(backbone="resnet18", multi_atrous=True, dim=32)).eval()
    assert isinstance(with_block.local.multi_atrous, MultiAtrous)
    assert [c.dilation for c in with_block.local.multi_atrous.branches] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert with_block(torch.randn(1, 3, 64, 64)).shape == (1, 32)


def test_batch_invariance(model):
    torch.manual_seed(4)
    images = torch.randn(4, 3, 64, 64)
    together = model(images)
    alone = torch.cat([model(images[i:i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)  # eval mode: no image influences another


def test_the_orthogonal_part_ignores_the_global_feature_scale_and_follows_the_local_one():
    torch.manual_seed(6)
    local, global_ = torch.randn(2, 8, 3, 3, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    reference = orthogonal_component(local, global_)
    assert torch.allclose(orthogonal_component(local, -7.5 * global_), reference)
    assert torch.allclose(orthogonal_component(0.25 * local, global_), 0.25 * reference)


def test_the_fused_vector_holds_the_global_feature_then_a_part_orthogonal_to_it(model):
    fused = model.fused(torch.randn(2, 3, 64, 64))
    global_, local = fused[:, :256], fused[:, 256:]
    cosine = (global_ * local).sum(1) / (global_.norm(dim=1) * local.norm(dim=1))
    assert cosine.abs().max() < 1e-4 and local.norm(dim=1).min() > 0


def test_every_part_gets_a_gradient_through_arcface():
    torch.manual_seed(5)
    net = DOLGMethod(DOLGConfig(backbone="resnet18", multi_atrous=True, dim=16)).train()
    for module in net.modules():  # timm zero-initialises each residual block's last BN scale
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    head = ArcFace(16, 5)
    head(net(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3])).backward()
    for name, parameter in [*net.named_parameters(), *head.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_arcface_logits_by_hand():
    head = ArcFace(2, 3, margin=0.15, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    theta = 0.4
    embedding = 5.0 * torch.tensor([[math.cos(theta), math.sin(theta)]])  # any length: it is normalised
    logits = head.logits(embedding, torch.tensor([0]))
    expected = 30.0 * torch.tensor([math.cos(theta + 0.15), math.sin(theta), -math.cos(theta)])
    assert torch.allclose(logits, expected[None], atol=1e-5)
    # beyond pi - m the target logit continues as cos(theta) - m sin(m) instead of turning up again
    opposite = head.logits(torch.tensor([[-1.0, 0.0]]), torch.tensor([0]))
    assert opposite[0, 0].item() == pytest.approx(30.0 * (-1.0 - math.sin(math.pi - 0.15) * 0.15), abs=1e-4)
    loss = head(embedding, torch.tensor([0]))
    assert loss.item() == pytest.approx(F.cross_entropy(expected[None], torch.tensor([0])).item(), abs=1e-5)
