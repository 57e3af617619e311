"""The watermarking schemes behind one interface (`schemes.watermarks.base`), the model zoo, data sets and attacks.

Importing the package registers every scheme module by name: `list_schemes()`, `get_scheme(name)`.
"""

from __future__ import annotations

from contracts.errors import DataError, SchemeError, ZooError
from schemes.data.dataset import Dataset
from schemes.data.datasets import list_datasets, load_dataset
from schemes.models.zoo import ModelCard, create_model, list_models, load_model, register_model, save_model
from schemes.training.attacks import fine_tune, prune_global_l1
from schemes.watermarks.base import (
    Predict,
    Scheme,
    Suspect,
    Verdict,
    Watermarked,
    get_scheme,
    list_schemes,
    make_config,
    predict_labels,
    register_scheme,
)

__all__ = [
    "DataError",
    "Dataset",
    "ModelCard",
    "Predict",
    "Scheme",
    "SchemeError",
    "Suspect",
    "Verdict",
    "Watermarked",
    "ZooError",
    "create_model",
    "fine_tune",
    "get_scheme",
    "list_datasets",
    "list_models",
    "list_schemes",
    "load_dataset",
    "load_model",
    "make_config",
    "predict_labels",
    "prune_global_l1",
    "register_model",
    "register_scheme",
    "save_model",
]
