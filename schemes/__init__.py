"""The watermarking schemes behind one interface (`schemes.base`), the model zoo, data sets and attacks.

Importing the package registers every scheme module by name: `list_schemes()`, `get_scheme(name)`.
"""

from __future__ import annotations

from schemes import blind as _blind  # noqa: F401  # each import registers its scheme
from schemes import function_coupled as _function_coupled  # noqa: F401
from schemes import mtlsign as _mtlsign  # noqa: F401
from schemes import new_label as _new_label  # noqa: F401
from schemes import passport as _passport  # noqa: F401
from schemes.attacks import fine_tune, prune_global_l1
from schemes.base import (
    Predict,
    Scheme,
    SchemeError,
    Suspect,
    Verdict,
    Watermarked,
    get_scheme,
    list_schemes,
    make_config,
    predict_labels,
    register_scheme,
)
from schemes.data import DataError, Dataset, list_datasets, load_dataset
from schemes.zoo import ModelCard, ZooError, create_model, list_models, load_model, register_model, save_model

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
