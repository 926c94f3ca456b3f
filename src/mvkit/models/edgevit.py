"""EdgeViT (Pan et al., "EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers",
ECCV 2022), written here from the paper and registered with timm as edgevit_xxs / edgevit_xs / edgevit_s.

Not in timm; its authors' code pins timm 0.3.2 and no weights were released, so the models train from scratch
or distilled. Module names follow the authors' layout (patch_embedN, blocksN, LocalAgg, SelfAttn, LocalProp),
so a checkpoint in that layout loads with --weights as it is.

Each stage: a strided patch embedding, then LGL blocks. An LGL block is
- Local aggregation (stages with sr > 1): depthwise 3x3 conv between 1x1 convs, and a conv MLP;
- Global sparse attention: every sr-th position is a delegate; delegates attend to each other, then a depthwise
  transposed conv (kernel = stride = sr) spreads them back over the sr x sr neighbourhood (local propagation).
"""

from __future__ import annotations

from functools import partial

from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    """Strided conv (kernel = stride = patch), then LayerNorm over channels. Any input size divisible by the
    patch (the authors' version asserted one fixed size)."""

    def __init__(self, patch: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LocalAgg(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class GlobalSparseAttn(nn.Module):
    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr = sr_ratio
        if sr_ratio > 1:
            self.LocalProp = nn.ConvTranspose2d(dim, dim, sr_ratio, stride=sr_ratio, groups=dim)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, height: int, width: int):
        """x: [B, H*W, C] tokens of an H x W map."""
        batch, _, channels = x.shape
        full = height, width
        if self.sr > 1:  # delegates: every sr-th position (the authors' 1x1 average pool with stride sr)
            grid = x.transpose(1, 2).reshape(batch, channels, height, width)[:, :, ::self.sr, ::self.sr]
            height, width = grid.shape[-2:]
            x = grid.flatten(2).transpose(1, 2)
        qkv = self.qkv(x).reshape(batch, -1, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attention = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attention @ v).transpose(1, 2).reshape(batch, -1, channels)
        if self.sr > 1:  # local propagation back to the full map
            x = self.LocalProp(x.transpose(1, 2).reshape(batch, channels, height, width))
            if tuple(x.shape[-2:]) != full:  # a map not a multiple of sr: the last delegates spread past its edge
                x = x[:, :, :full[0], :full[1]]
            x = self.norm(x.flatten(2).transpose(1, 2))
        return self.proj(x)


class SelfAttn(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm(dim)
        self.attn = GlobalSparseAttn(dim, num_heads, sr_ratio)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.pos_embed(x)
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens), height, width))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class LGLBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float):
        super().__init__()
        self.LocalAgg = LocalAgg(dim, mlp_ratio, drop_path) if sr_ratio > 1 else nn.Identity()
        self.SelfAttn = SelfAttn(dim, num_heads, mlp_ratio, sr_ratio, drop_path)

    def forward(self, x):
        return self.SelfAttn(self.LocalAgg(x))


class EdgeViT(nn.Module):
    def __init__(self, depths=(1, 1, 3, 2), dims=(36, 72, 144, 288), head_dim: int = 36, mlp_ratio: float = 4.0,
                 sr_ratios=(4, 2, 2, 1), num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "avg", **_unused_timm_kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.global_pool = global_pool
        total = sum(depths)
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]  # plain floats: meta-device safe
        widths = (in_chans, *dims)
        for stage, (depth, dim, patch, sr) in enumerate(zip(depths, dims, (4, 2, 2, 2), sr_ratios), start=1):
            setattr(self, f"patch_embed{stage}", PatchEmbed(patch, widths[stage - 1], dim))
            start = sum(depths[:stage - 1])
            setattr(self, f"blocks{stage}", nn.ModuleList(
                LGLBlock(dim, dim // head_dim, mlp_ratio, sr, rates[start + i]) for i in range(depth)))
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        for stage in range(1, 5):
            x = getattr(self, f"patch_embed{stage}")(x)
            for block in getattr(self, f"blocks{stage}"):
                x = block(x)
        return self.norm(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head_drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


VARIANTS = {
    # depths, dims, head_dim: the paper's Table 1 and the authors' code
    "edgevit_xxs": dict(depths=(1, 1, 3, 2), dims=(36, 72, 144, 288), head_dim=36),
    "edgevit_xs": dict(depths=(1, 1, 3, 1), dims=(48, 96, 240, 384), head_dim=48),
    "edgevit_s": dict(depths=(1, 2, 5, 3), dims=(48, 96, 240, 384), head_dim=48),
}

default_cfgs = generate_default_cfgs({
    name: {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.9,
           "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
           "first_conv": "patch_embed1.proj", "classifier": "head",
           "paper_ids": "arXiv:2205.03436", "license": "apache-2.0"}
    for name in VARIANTS
})


def _create(name: str, pretrained: bool = False, **kwargs) -> EdgeViT:
    return build_model_with_cfg(EdgeViT, name, pretrained, **{**VARIANTS[name], **kwargs})


@register_model
def edgevit_xxs(pretrained: bool = False, **kwargs) -> EdgeViT:
    return _create("edgevit_xxs", pretrained, **kwargs)


@register_model
def edgevit_xs(pretrained: bool = False, **kwargs) -> EdgeViT:
    return _create("edgevit_xs", pretrained, **kwargs)


@register_model
def edgevit_s(pretrained: bool = False, **kwargs) -> EdgeViT:
    return _create("edgevit_s", pretrained, **kwargs)
