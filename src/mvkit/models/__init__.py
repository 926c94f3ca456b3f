"""The model zoo, pretrained-weight loading and mvkit checkpoints."""

from mvkit.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from mvkit.models.weights import load_weights, read_state_dict
from mvkit.models.zoo import (ZOO, architecture_of, create_model, describe_zoo, labels_of, preprocess_of,
                              relabel_classifier, resolve_name, set_preprocess)

__all__ = [
    "ZOO", "architecture_of", "create_model", "describe_zoo", "labels_of", "load_checkpoint", "load_model",
    "load_weights", "preprocess_of", "read_state_dict", "relabel_classifier", "resolve_name", "save_checkpoint",
    "set_preprocess",
]
