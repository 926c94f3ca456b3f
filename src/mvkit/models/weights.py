"""Reading weight files safely and mapping foreign checkpoint layouts onto timm models.

Accepted layouts:
  timm          keys equal the timm model's own (safetensors or a plain torch state dict)
  apple-cvnets  Apple ml-cvnets MobileViT (`conv_1.block.conv.weight`, `layer_3.1.global_rep...`,
                `classifier.fc.weight`): tensors map one-to-one, in order and shape, onto timm `mobilevit_*`
  lukemelas     lukemelas EfficientNet-PyTorch (`_conv_stem`, `_blocks.N...`, `_fc`): maps in order and
                shape onto timm `tf_efficientnet_*`

Nothing is ever unpickled: safetensors, or torch.load(weights_only=True), which refuses any object that
is not a tensor or a plain container.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from mvkit.errors import MvkitError

log = logging.getLogger(__name__)

# Containers that training scripts wrap state dicts in.
WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "state_dict_ema", "model_ema")
# Key prefixes left by DataParallel / DDP / torch.compile wrappers.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from common training containers."""
    path = Path(path)
    if not path.is_file():
        raise MvkitError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"unsupported GLOBAL (\S+)", str(exc), flags=re.IGNORECASE)
            if found is None:
                raise MvkitError(f"{path} is not a readable PyTorch checkpoint (corrupt or another format)") from exc
            raise MvkitError(
                f"refused to load {path}: it holds a Python object ({found.group(1)}) besides tensors, and "
                "unpickling it could run arbitrary code. If you trust the file, convert it once in a separate "
                "environment: torch.save(torch.load(f, weights_only=False)['state_dict'], 'clean.pt'), or save "
                "the state dict with safetensors."
            ) from exc
        except (RuntimeError, EOFError, OSError) as exc:
            raise MvkitError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(state, dict):
            wrapped = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if wrapped is not None and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = wrapped
    if not isinstance(state, dict) or not state:
        raise MvkitError(f"{path} holds no state dict (found {type(state).__name__})")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue  # epoch counters, args and the like beside the tensors
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        tensors[key] = value
    if not tensors:
        raise MvkitError(f"{path} holds no tensors")
    return tensors


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    keys = set(state)
    if "conv_1.block.conv.weight" in keys and any(k.startswith("classifier.fc.") for k in keys):
        return "apple-cvnets"
    if "_conv_stem.weight" in keys and any(k.startswith("_blocks.") for k in keys):
        return "lukemelas"
    return "timm"


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the classifier(s): timm's `classifier` is a name or, for distilled models, a tuple
    (DeiT: ('head', 'head_dist'))."""
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    names = classifier if isinstance(classifier, (tuple, list)) else (classifier,)
    return tuple(str(name) + "." for name in names)


def _map_in_order(state: dict[str, torch.Tensor], model: nn.Module, source_head: str, layout: str) -> dict[str, torch.Tensor]:
    """Pair source and target tensors by position (body) and copy the head only where shapes agree."""
    target = model.state_dict()
    target_head = _head_prefixes(model)
    source_body = [(k, v) for k, v in state.items() if not _is_counter(k) and not k.startswith(source_head)]
    source_headers = [(k, v) for k, v in state.items() if k.startswith(source_head)]
    target_body = [k for k in target if not _is_counter(k) and not k.startswith(target_head)]
    target_headers = [k for k in target if k.startswith(target_head)]
    if len(source_body) != len(target_body):
        raise MvkitError(
            f"{layout} checkpoint has {len(source_body)} body tensors but {type(model).__name__} expects "
            f"{len(target_body)}: the checkpoint is for a different architecture or size"
        )
    mapped = {}
    for (src_key, tensor), dst_key in zip(source_body, target_body):
        if tensor.shape != target[dst_key].shape:
            raise MvkitError(
                f"{layout} checkpoint does not fit this model: {src_key} {tuple(tensor.shape)} would load into "
                f"{dst_key} {tuple(target[dst_key].shape)}; is it for a different model size?"
            )
        mapped[dst_key] = tensor
    if len(source_headers) == len(target_headers) and all(
        v.shape == target[k].shape for (_, v), k in zip(source_headers, target_headers)
    ):
        mapped.update({k: v for (_, v), k in zip(source_headers, target_headers)})
    else:
        log.info("classifier head not loaded (different number of classes): it starts from random init")
    return mapped


def to_timm_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert any accepted layout to the model's own keys. The head is left out when its shape differs."""
    layout = detect_layout(state)
    if layout == "apple-cvnets":
        return _map_in_order(state, model, "classifier.", layout)
    if layout == "lukemelas":
        return _map_in_order(state, model, "_fc.", layout)
    target = model.state_dict()
    head = _head_prefixes(model)
    state = {k: v for k, v in state.items() if not (k.startswith(head) and k in target and v.shape != target[k].shape)}
    return state


def load_weights(model: nn.Module, path: Path | str) -> bool:
    """Load a weights file of any accepted layout into model, in place; missing head tensors are allowed.
    Returns whether the classifier head was loaded too (False: the checkpoint had another number of classes)."""
    state = to_timm_state_dict(read_state_dict(path), model)
    head = _head_prefixes(model)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shape mismatches
        raise MvkitError(f"{path} does not fit this model: {exc}") from exc
    missing = [k for k in missing if not k.startswith(head) and not _is_counter(k)]
    if missing or unexpected:
        raise MvkitError(
            f"{path} does not match {model.pretrained_cfg.get('architecture', type(model).__name__)}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]}). Is it a checkpoint of another architecture?"
        )
    return any(k.startswith(head) for k in state)
