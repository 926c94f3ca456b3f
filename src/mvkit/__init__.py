"""mvkit: from a folder of labeled photos to a verified, benchmarked on-device image classifier.

The Python API does everything the CLI does:
    from mvkit.models import create_model, load_model, save_checkpoint
    from mvkit.data import load_data
    from mvkit.predict import predict_files
    from mvkit.evaluate import evaluate
"""

from mvkit.artifact import Artifact
from mvkit.errors import MvkitError
from mvkit.preprocess import Preprocess

__version__ = "0.1.0"
__all__ = ["Artifact", "MvkitError", "Preprocess", "__version__"]
