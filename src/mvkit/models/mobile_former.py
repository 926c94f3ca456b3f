"""Mobile-Former (Chen et al., "Mobile-Former: Bridging MobileNet and Transformer", CVPR 2022), written here from
the paper and registered with timm as mobile_former_26m ... mobile_former_508m (the name is the FLOPs at 224 px).

Not in timm; the authors' weights are on an external drive that cannot be reached from here, so the models train
from scratch or distilled. A parallel design: a MobileNet branch on the feature map and a small Transformer on a
few learned tokens (3 to 6), joined by two light cross-attentions each block:
- Mobile -> Former: the tokens query the feature map (2 heads; the map is keys and values as it is, unprojected);
- Former: multi-head self-attention among the tokens (4 heads) and a feed-forward layer;
- Mobile: an inverted bottleneck whose activations are dynamic ReLUs, max(a1 * x, a2 * x) per channel, with the
  coefficients computed from the first token;
- Former -> Mobile: the feature map queries the tokens (2 heads).
The classifier joins the pooled feature map and the first token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn


def conv_bn(inp: int, oup: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups <= 1:
        return x
    batch, channels, height, width = x.shape
    return x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(
        batch, channels, height, width)


class TokenCoefficients(nn.Module):
    """The dynamic ReLU's 2 x C coefficients from the first token: Linear, ReLU, Linear, hard sigmoid."""

    def __init__(self, token_dim: int, channels: int, reduction: int = 4):
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(token_dim, token_dim // reduction)
        self.fc2 = nn.Linear(token_dim // reduction, 2 * channels)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coefficients = F.hardsigmoid(self.fc2(F.relu(self.fc1(tokens[:, 0]))))[:, :, None, None]
        first, second = coefficients.split(self.channels, dim=1)
        return (first - 0.5) * 2.0 + 1.0, (second - 0.5) * 2.0  # slopes in [0, 2] and [-1, 1]


def dynamic_relu(x: torch.Tensor, slopes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return torch.maximum(x * slopes[0], x * slopes[1])


class MobileToFormer(nn.Module):
    """Tokens attend to the feature map (the map itself is keys and values), scaled per channel by a gate from the
    tokens, projected back to the token width; residual + LayerNorm."""

    def __init__(self, channels: int, token_dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.query = nn.Linear(token_dim, channels)
        self.gate = nn.Linear(token_dim, channels)
        self.proj = nn.Linear(channels, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        count = tokens.shape[1]
        query = self.query(tokens).reshape(batch, count, self.heads, -1).transpose(1, 2)  # B, h, T, C/h
        keys = features.reshape(batch, self.heads, channels // self.heads, height * width)  # B, h, C/h, HW
        attention = ((query @ keys) * self.scale).softmax(dim=-1)  # B, h, T, HW
        gathered = (attention @ keys.transpose(-1, -2)).transpose(1, 2).reshape(batch, count, channels)
        gathered = gathered * (F.hardsigmoid(self.gate(tokens)) * 2.0)
        return self.norm(tokens + self.proj(gathered))


class Former(nn.Module):
    """Self-attention among the tokens (tokens are keys and values as they are), then a feed-forward layer."""

    def __init__(self, token_dim: int, heads: int = 4, ffn_ratio: int = 2):
        super().__init__()
        self.heads = heads
        self.scale = (token_dim // heads) ** -0.5
        self.query = nn.Linear(token_dim, token_dim)
        self.proj = nn.Linear(token_dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.ffn = nn.Sequential(nn.Linear(token_dim, token_dim * ffn_ratio), nn.GELU(),
                                 nn.Linear(token_dim * ffn_ratio, token_dim))
        self.ffn_norm = nn.LayerNorm(token_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, dim = tokens.shape
        query = self.query(tokens).reshape(batch, count, self.heads, -1).transpose(1, 2)  # B, h, T, D/h
        keys = tokens.reshape(batch, count, self.heads, -1).transpose(1, 2)  # B, h, T, D/h
        attention = ((query @ keys.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        mixed = (attention @ keys).transpose(1, 2).reshape(batch, count, dim)
        tokens = self.norm(tokens + self.proj(mixed))
        return self.ffn_norm(tokens + self.ffn(tokens))


class FormerToMobile(nn.Module):
    """The feature map attends to the tokens (the map itself is the query); the result is added to the map."""

    def __init__(self, channels: int, token_dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.key = nn.Linear(token_dim, channels)
        self.value = nn.Linear(token_dim, channels)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        count = tokens.shape[1]
        query = features.reshape(batch, self.heads, channels // self.heads, height * width).transpose(-1, -2)
        key = self.key(tokens).reshape(batch, count, self.heads, -1).permute(0, 2, 3, 1)  # B, h, C/h, T
        value = self.value(tokens).reshape(batch, count, self.heads, -1).transpose(1, 2)  # B, h, T, C/h
        attention = ((query @ key) * self.scale).softmax(dim=-1)  # B, h, HW, T
        spread = (attention @ value).transpose(-1, -2).reshape(batch, channels, height, width)
        return features + spread


class ConvOnlyBlock(nn.Module):
    """The first block when it has no second expansion: depthwise 3x3 (with expansion), ReLU6, pointwise."""

    def __init__(self, inp: int, oup: int, stride: int, expansion: int, groups: int):
        super().__init__()
        self.depthwise = conv_bn(inp, inp * expansion, 3, stride, groups=inp)
        self.pointwise = conv_bn(inp * expansion, oup, groups=groups)
        self.shuffle = inp if groups > 1 else 1
        self.residual = stride == 1 and inp == oup

    def forward(self, features, tokens):
        out = channel_shuffle(F.relu6(self.depthwise(features)), self.shuffle)
        out = self.pointwise(out)
        return (out + features if self.residual else out), tokens


class MobileFormerBlock(nn.Module):
    """Mobile -> Former, Former, Mobile, Former -> Mobile. The Mobile part is either
    - "bneck" (the MobileNetV2 order): pointwise expand, depthwise (stride), pointwise project; or
    - "lite" (depthwise first, for the stride-2 blocks): depthwise with expansion (stride), pointwise project, then
      a second depthwise expansion and projection with a residual around it."""

    def __init__(self, kind: str, inp: int, oup: int, stride: int, expansions: tuple[int, int], token_dim: int,
                 groups: int, drop_path: float):
        super().__init__()
        self.kind = kind
        self.mobile_to_former = MobileToFormer(inp, token_dim)
        self.former = Former(token_dim)
        self.groups = groups
        if kind == "lite":
            hidden1, hidden2 = round(inp * expansions[0]), round(oup * expansions[1])
            self.expand = conv_bn(inp, hidden1, 3, stride, groups=inp)
            self.act1 = TokenCoefficients(token_dim, hidden1)
            self.project = conv_bn(hidden1, oup, groups=groups)
            self.expand2 = conv_bn(oup, hidden2, 3, groups=oup)
            self.act2 = TokenCoefficients(token_dim, hidden2)
            self.project2 = conv_bn(hidden2, oup, groups=groups)
            self.shuffles = (inp, oup)
        else:
            hidden = round(inp * expansions[0])
            self.expand = conv_bn(inp, hidden, groups=groups)
            self.act1 = TokenCoefficients(token_dim, hidden)
            self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
            self.act2 = TokenCoefficients(token_dim, hidden)
            self.project = conv_bn(hidden, oup, groups=groups)
            self.shuffles = (groups, groups)
        self.former_to_mobile = FormerToMobile(oup, token_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = stride == 1 and inp == oup

    def _shuffle(self, x, index: int):
        return channel_shuffle(x, self.shuffles[index]) if self.groups > 1 else x

    def forward(self, features, tokens):
        tokens = self.former(self.mobile_to_former(features, tokens))
        if self.kind == "lite":
            out = dynamic_relu(self._shuffle(self.expand(features), 0), self.act1(tokens))
            out = self.project(out)
            inner = dynamic_relu(self._shuffle(self.expand2(out), 1), self.act2(tokens))
            out = self.drop_path(self.project2(inner)) + out
            out = self.former_to_mobile(out, tokens)
            return (out + features if self.residual else out), tokens
        out = dynamic_relu(self._shuffle(self.expand(features), 0), self.act1(tokens))
        out = dynamic_relu(self.depthwise(out), self.act2(tokens))
        out = self._shuffle(self.project(out), 1)
        if self.residual:
            out = self.drop_path(out) + features
        return self.former_to_mobile(out, tokens), tokens


class MobileFormer(nn.Module):
    def __init__(self, blocks, stem: int, token_count: int, token_dim: int, head_dim: int, groups: int = 1,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 head_expansion: int = 6, global_pool: str = "avg", **_unused_timm_kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.tokens = nn.Parameter(torch.randn(token_count, token_dim))
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6())
        layers, width = [], stem
        for index, (kind, expansion, channels, stride, expansion2) in enumerate(blocks):
            rate = drop_path_rate * (index + 1) / len(blocks)
            if kind == "lite" and expansion2 == 0:
                layers.append(ConvOnlyBlock(width, channels, stride, expansion, groups))
            else:
                layers.append(MobileFormerBlock(kind, width, channels, stride, (expansion, expansion2), token_dim,
                                                groups, rate))
            width = channels
        self.blocks = nn.ModuleList(layers)
        self.final_mobile_to_former = MobileToFormer(width, token_dim)
        hidden = width * head_expansion
        self.head_groups = groups
        self.head_conv = conv_bn(width, hidden, groups=groups)
        self.num_features = hidden + token_dim
        self.head_hidden_size = head_dim
        self.head_fc = nn.Sequential(nn.Linear(hidden + token_dim, head_dim), nn.BatchNorm1d(head_dim), nn.Hardswish())
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_dim, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0, (2.0 / fan_out) ** 0.5)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        features = self.stem(x)
        tokens = self.tokens.unsqueeze(0).repeat(x.shape[0], 1, 1)  # a copy: an expanded view of a parameter confuses autograd hooks
        for block in self.blocks:
            features, tokens = block(features, tokens)
        tokens = self.final_mobile_to_former(features, tokens)
        pooled = F.hardswish(F.relu6(self.head_conv(channel_shuffle(features, self.head_groups))).mean(dim=(2, 3)))
        return torch.cat([pooled, tokens[:, 0]], dim=1)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head_drop(self.head_fc(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _blocks(rows: str) -> list[tuple]:
    """Rows of "kind expansion channels repeats stride expansion2" -> one tuple per block (repeats at stride 1).
    expansion2 is the lite block's second expansion (0: its convolution-only form); bneck blocks have one."""
    blocks = []
    for row in rows.strip().splitlines():
        kind, expansion, channels, repeats, stride, expansion2 = row.split()
        for repeat in range(int(repeats)):
            blocks.append((kind, int(expansion), int(channels), int(stride) if repeat == 0 else 1, int(expansion2)))
    return blocks


# The paper's Table 9 as the authors' code builds it: lite = depthwise-first block, bneck = inverted bottleneck
_LARGE = "lite 2 {0} 1 1 0\nlite 6 {1} 1 2 4\nbneck {e3} {1} 1 1 0\nlite 6 {2} 1 2 4\nbneck {e5} {2} 1 1 0\n" \
         "lite 6 {3} 1 2 4\nbneck 4 {3} 1 1 0\nbneck 6 {4} 2 1 0\nlite 6 {5} 1 2 4\nbneck 6 {5} 2 1 0"
_SMALL = "lite 3 {0} 1 2 0\nbneck 3 {0} 1 1 0\nlite 6 {1} 1 2 4\nbneck 3 {1} 1 1 0\nlite 6 {2} 1 2 4\n" \
         "bneck 4 {2} 1 1 0\nbneck 6 {3} 1 1 0\nlite 6 {4} 1 2 4\nbneck 6 {4} 1 1 0"
VARIANTS = {
    "mobile_former_508m": dict(blocks=_blocks(_LARGE.format(24, 40, 72, 128, 176, 240, e3=3, e5=3)),
                               stem=24, token_count=6, token_dim=192, head_dim=1920),
    "mobile_former_294m": dict(blocks=_blocks(_LARGE.format(16, 24, 48, 96, 128, 192, e3=4, e5=4)),
                               stem=16, token_count=6, token_dim=192, head_dim=1920),
    "mobile_former_214m": dict(blocks=_blocks(_LARGE.format(12, 20, 40, 80, 112, 160, e3=3, e5=4)),
                               stem=12, token_count=6, token_dim=192, head_dim=1600),
    "mobile_former_151m": dict(blocks=_blocks(_LARGE.format(12, 16, 32, 64, 88, 128, e3=3, e5=3)),
                               stem=12, token_count=6, token_dim=192, head_dim=1280),
    "mobile_former_96m": dict(blocks=_blocks("lite 2 12 1 1 0\nlite 6 16 1 2 4\nlite 6 32 1 2 4\nbneck 3 32 1 1 0\n"
                                             "lite 6 64 1 2 4\nbneck 4 64 1 1 0\nbneck 6 88 1 1 0\nlite 6 128 1 2 4\n"
                                             "bneck 6 128 1 1 0"),
                              stem=12, token_count=4, token_dim=128, head_dim=1280),
    "mobile_former_52m": dict(blocks=_blocks(_SMALL.format(12, 24, 48, 64, 96)), stem=8, token_count=3, token_dim=128,
                              head_dim=1024),
    "mobile_former_26m": dict(blocks=_blocks(_SMALL.format(12, 24, 48, 64, 96)), stem=8, token_count=3, token_dim=128,
                              head_dim=1024, groups=4),
}

default_cfgs = generate_default_cfgs({
    name: {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (1, 1), "crop_pct": 0.875,
           "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
           "first_conv": "stem.0", "classifier": "classifier", "paper_ids": "arXiv:2108.05895"}
    for name in VARIANTS
})


def _create(name: str, pretrained: bool = False, **kwargs) -> MobileFormer:
    return build_model_with_cfg(MobileFormer, name, pretrained, **{**VARIANTS[name], **kwargs})


@register_model
def mobile_former_26m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_26m", pretrained, **kwargs)


@register_model
def mobile_former_52m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_52m", pretrained, **kwargs)


@register_model
def mobile_former_96m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_96m", pretrained, **kwargs)


@register_model
def mobile_former_151m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_151m", pretrained, **kwargs)


@register_model
def mobile_former_214m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_214m", pretrained, **kwargs)


@register_model
def mobile_former_294m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_294m", pretrained, **kwargs)


@register_model
def mobile_former_508m(pretrained: bool = False, **kwargs) -> MobileFormer:
    return _create("mobile_former_508m", pretrained, **kwargs)
