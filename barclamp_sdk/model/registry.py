"""The barclamps available: installed entry points, ``CROWBAR_BARCLAMPS``, registered classes."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from barclamp_sdk.errors import ConfigurationError, NotFoundError
from barclamp_sdk.model.barclamp import Barclamp
from barclamp_sdk.model.naming import check_barclamp_name
from barclamp_sdk.model.states import STATES

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "barclamp_sdk.barclamps"
#: Extra barclamps to load, not installed as packages: ``module:Class,...``.
EXTRA_ENV = "CROWBAR_BARCLAMPS"


def check_barclamp_class(cls: type[Barclamp]) -> None:
    """Refuse a barclamp whose declarations do not hold together."""
    where = f"barclamp class {cls.__module__}.{cls.__qualname__}"
    try:
        check_barclamp_name(cls.name)
    except Exception as exc:  # noqa: BLE001 - reworded for authors
        raise ConfigurationError(f"{where}: {exc}") from None
    names = [e.name for e in cls.elements]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}: element names repeat: {names}")
    instance = cls()
    ordered = [n for batch in instance.batches() for n in batch]
    unknown = sorted(set(ordered) - set(names))
    if unknown:
        raise ConfigurationError(f"{where}: element_order names unknown elements {unknown}")
    missing = sorted(set(names) - set(ordered))
    if missing:
        raise ConfigurationError(f"{where}: element_order leaves out {missing}")
    for state in (*cls.transition_states, *cls.ready_states):
        if state not in STATES:
            raise ConfigurationError(f"{where}: unknown state {state!r} in transition_states/ready_states")
    for element in cls.elements:
        for state in element.states:
            if state != "all" and state not in STATES:
                raise ConfigurationError(f"{where}: element {element.name} has unknown state {state!r}")
    if not (isinstance(cls.Attributes, type) and issubclass(cls.Attributes, BaseModel)):
        raise ConfigurationError(f"{where}: Attributes must be a pydantic model")
    try:
        cls.Attributes()
    except PydanticValidationError as exc:
        raise ConfigurationError(
            f"{where}: every attribute needs a default (the template); {exc.errors()[0]['loc']} has none"
        ) from None


def _import_from_here(module_name: str) -> object:
    """Import ``module_name``; if it is not found, from the current directory too.

    ``CROWBAR_BARCLAMPS=ntp_barclamp:Ntp crowbar ...`` run next to ``ntp_barclamp.py``
    finds it without ``PYTHONPATH=.`` (the directory goes last on ``sys.path``, so it
    never shadows an installed package).
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != module_name.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)
        return importlib.import_module(module_name)


class BarclampRegistry:
    """The barclamps available: installed entry points plus registered classes."""

    def __init__(self, classes: Iterable[type[Barclamp]] = (), *, entry_points_group: str | None = ENTRY_POINT_GROUP) -> None:
        self._classes: dict[str, type[Barclamp]] = {}
        self._instances: dict[str, Barclamp] = {}
        self.load_errors: dict[str, str] = {}
        if entry_points_group:
            self._load_entry_points(entry_points_group)
            self._load_from_environment()
        for cls in classes:
            self.register(cls)

    def _load_entry_points(self, group: str) -> None:
        for point in entry_points(group=group):
            try:
                cls = point.load()
                self.register(cls)
            except Exception as exc:  # noqa: BLE001 - one broken package must not stop the rest
                self.load_errors[point.name] = f"{type(exc).__name__}: {exc}"
                log.warning("barclamp %s (%s) could not be loaded: %s", point.name, point.value, exc)

    def _load_from_environment(self) -> None:
        for spec in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
            module_name, _, class_name = spec.partition(":")
            try:
                cls = getattr(_import_from_here(module_name), class_name)
                self.register(cls)
            except Exception as exc:  # noqa: BLE001 - reported, the rest still load
                self.load_errors[spec] = f"{type(exc).__name__}: {exc}"
                log.warning("barclamp %s from %s could not be loaded: %s", spec, EXTRA_ENV, exc)

    def register(self, cls: type[Barclamp]) -> type[Barclamp]:
        """Add a barclamp class (usable as a class decorator)."""
        check_barclamp_class(cls)
        self._classes[cls.name] = cls
        self._instances.pop(cls.name, None)
        return cls

    def get(self, name: str) -> Barclamp:
        """The barclamp called ``name`` (NotFoundError listing the known ones)."""
        if name not in self._classes:
            known = ", ".join(sorted(self._classes)) or "none installed"
            raise NotFoundError(f"unknown barclamp {name!r}; available: {known}")
        if name not in self._instances:
            self._instances[name] = self._classes[name]()
        return self._instances[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def all(self) -> list[Barclamp]:
        """Every barclamp, in run order."""
        return sorted((self.get(n) for n in self._classes), key=lambda b: (b.effective_run_order, b.name))
