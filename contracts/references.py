"""Reference models a node builds and records (DESIGN §6.1 rule 3): the recipes and the `[[references]]`
tables of a node config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.datasets import EMBEDDED_DATASETS
from contracts.errors import ConfigError

REFERENCE_RECIPES = ("plain", "new-label", "passport")
#: The recipe of a public checkpoint a community admits by hash (`wmnode reference add`): its slot's
#: data set is the model hash itself, so every checkpoint is a slot of its own.
CHECKPOINT = "checkpoint"
_REFERENCE_KEYS = {"recipe": str, "arch": str, "dataset": str, "input_shape": list, "seed": int, "epochs": int}


@dataclass(frozen=True)
class ReferenceSpec:
    """One `[[references]]` entry: a reference model this node trains and records at first start."""

    recipe: str
    arch: str = "lenet5"
    dataset: str = "digits"
    input_shape: tuple[int, int, int] = (1, 28, 28)
    seed: int = 1
    epochs: int = 10

    def __post_init__(self) -> None:
        if self.recipe not in REFERENCE_RECIPES:
            known = ", ".join(REFERENCE_RECIPES)
            raise ConfigError(f"unknown reference recipe {self.recipe!r}; known: {known}")
        if not 1 <= self.epochs <= 1000 or not 0 <= self.seed <= 2**31:
            raise ConfigError("need 1 ≤ epochs ≤ 1000 and 0 ≤ seed ≤ 2^31")

    @property
    def model_arch(self) -> str:
        """The zoo architecture the recipe trains: the arch's passport variant for `passport`."""
        return f"{self.arch}-passport" if self.recipe == "passport" else self.arch

    @property
    def extra_classes(self) -> int:
        """Outputs beyond the task's classes: new label's Δ."""
        return 1 if self.recipe == "new-label" else 0

    @property
    def shape_text(self) -> str:
        return "x".join(str(v) for v in self.input_shape)

    @property
    def slot(self) -> tuple[str, int, str, str, str]:
        """The log's key for this reference (registry.messages.Reference.slot): the zoo model the
        recipe trains (passport: the arch's passport variant; new label: one extra class)."""
        classes = EMBEDDED_DATASETS[self.dataset] + self.extra_classes
        return (self.model_arch, classes, self.shape_text, self.dataset, self.recipe)

    def job(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "arch": self.arch, "dataset": self.dataset,
                "input_shape": list(self.input_shape), "seed": self.seed, "epochs": self.epochs}  # fmt: skip


def parse_references(items: object, where: str) -> tuple[ReferenceSpec, ...]:
    """The `[[references]]` tables of a node config."""
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of tables ([[references]])")
    specs = []
    for i, table in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{at} must be a table")
        for name, value in table.items():
            want = _REFERENCE_KEYS.get(name)
            if want is None:
                raise ConfigError(f"{at}: unknown field {name!r} (allowed: {', '.join(sorted(_REFERENCE_KEYS))})")
            if isinstance(value, bool) or not isinstance(value, want):
                raise ConfigError(f"{at}.{name} must be a {want.__name__}")
        if table.get("recipe") not in REFERENCE_RECIPES:
            raise ConfigError(f"{at}.recipe must be one of {', '.join(REFERENCE_RECIPES)}")
        if table.get("dataset", "digits") not in EMBEDDED_DATASETS:
            raise ConfigError(f"{at}.dataset must be one of {', '.join(sorted(EMBEDDED_DATASETS))}")
        shape = table.get("input_shape", [1, 28, 28])
        if not (len(shape) == 3 and all(type(v) is int and 1 <= v <= 512 for v in shape)):
            raise ConfigError(f"{at}.input_shape must be three integers in [1, 512]")
        if not 0 <= table.get("seed", 1) <= 2**31 or not 1 <= table.get("epochs", 10) <= 1000:
            raise ConfigError(f"{at}: seed must be in [0, 2^31] and epochs in [1, 1000]")
        specs.append(ReferenceSpec(**{**table, "input_shape": tuple(shape)}))
    return tuple(specs)
