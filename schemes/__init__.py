"""The watermarking schemes behind one interface, the model zoo, data sets and attacks.

MTLSign (`schemes.mtlsign`, built on `mtlsign/`) is here; the other four schemes come next.
"""

from __future__ import annotations

from schemes.attacks import fine_tune, prune_global_l1
from schemes.data import DataError, Dataset, list_datasets, load_dataset
from schemes.zoo import ModelCard, ZooError, create_model, list_models, load_model, register_model, save_model

__all__ = [
    "DataError",
    "Dataset",
    "ModelCard",
    "ZooError",
    "create_model",
    "fine_tune",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_model",
    "prune_global_l1",
    "register_model",
    "save_model",
]
