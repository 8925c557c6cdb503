"""Proposal validation: every problem found before anything is written.

Checked, in order: the document's shape; the attributes against the
barclamp's model; elements (known names, machines that exist, placement
rules: count/min/max/odd/unique/conflicts); roles another proposal already
assigns; disk claims (devices that exist, one owner per disk); the barclamp's
own ``validate``; and the dependency graph (no cycles).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from barclamp_sdk.errors import CrowbarError, ValidationError
from barclamp_sdk.inputs import load_yaml
from barclamp_sdk.model.cluster import ClusterView
from barclamp_sdk.model.hooks import Context, HookServices
from barclamp_sdk.model.inventory import Inventory
from barclamp_sdk.model.naming import proposal_item_id
from barclamp_sdk.model.proposal import Proposal, claims_of_others
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.spec import ProposalRef
from barclamp_sdk.model.store import ProposalStore


def check_shape(proposal: Proposal) -> list[str]:
    """The document has Crowbar's shape."""
    errors = []
    data = proposal.data
    if data.get("id") != proposal_item_id(proposal.barclamp, proposal.name):
        errors.append(f"id must be {proposal_item_id(proposal.barclamp, proposal.name)!r}")
    for part in ("attributes", "deployment"):
        if not isinstance(data.get(part), dict) or not isinstance(data[part].get(proposal.barclamp), dict):
            errors.append(f"{part}.{proposal.barclamp} must be an object")
    if errors:
        return errors
    elements = proposal.deployment.get("elements")
    if not isinstance(elements, dict):
        return [f"deployment.{proposal.barclamp}.elements must map element names to lists of machines"]
    for element, members in elements.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            errors.append(f"deployment.{proposal.barclamp}.elements.{element} must be a list of machine names")
    notes = data.get("notes", [])
    if not isinstance(notes, list):
        errors.append("notes must be a list of strings")
    return errors


def check_attributes(proposal: Proposal) -> list[str]:
    """The settings against the barclamp's attribute model."""
    try:
        proposal.settings
    except ValidationError as exc:
        return exc.errors
    return []


def check_elements(proposal: Proposal, cluster: ClusterView, *, draft: bool = False) -> list[str]:
    """Known elements, existing machines, placement rules, foreign roles."""
    definition = proposal.definition
    errors = []
    known = {e.name for e in definition.elements}
    for element, members in proposal.elements.items():
        if element not in known:
            hint = difflib.get_close_matches(element, known, 1)
            errors.append(
                f"unknown element {element!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                  f"; elements: {', '.join(sorted(known))}"))
            continue
        if len(set(members)) != len(members):
            errors.append(f"{element} lists a machine twice")
        for node in members:
            if node not in cluster:
                errors.append(
                    f"{element} names unknown machine {node!r}; see `crowbar machines list`")
    held = proposal.elements_by_node()
    for element in definition.elements:
        members = proposal.elements.get(element.name, [])
        problem = element.check_count(len(members), draft=draft)
        if problem:
            errors.append(problem)
        for node in members:
            others = [e for e in held.get(node, []) if e != element.name]
            if element.unique and others:
                errors.append(f"{node}: {element.name} must be alone among {definition.name}'s "
                              f"elements but also has {', '.join(others)}")
            clash = [c for c in element.conflicts if c in others]
            record = cluster.get(node)
            if record is not None:
                clash += [c for c in element.conflicts
                          if c in record.entries and record.entries[c].owner != proposal.ref.key]
                entry = record.entries.get(element.name)
                if entry is not None and entry.owner and entry.owner != proposal.ref.key:
                    errors.append(f"{node} already has {element.name} from proposal "
                                  f"{entry.owner.replace('-', '/', 1)}")
            if clash:
                errors.append(f"{node}: {element.name} conflicts with {', '.join(sorted(set(clash)))}")
    return errors


def check_machines(proposal: Proposal, inventory: Inventory) -> list[str]:
    """Each element's platform constraints and ``accepts`` check, for every machine it holds."""
    errors = []
    for element in proposal.definition.elements:
        if not element.checks_machines:
            continue
        for node in proposal.elements.get(element.name, []):
            machine = inventory.get(node)
            reason = element.refuses(machine) if machine is not None else None
            if reason:
                errors.append(f"{node} cannot hold {element.name}: {reason}")
    return errors


def check_claims(proposal: Proposal, claims: Mapping[str, Iterable[str]], inventory: Inventory,
                 cluster: ClusterView, others: Iterable[Proposal]) -> list[str]:
    """Claimed disks exist, and nobody else owns them."""
    errors = []
    owner = proposal.ref.key
    taken = claims_of_others(proposal, others)
    for node, devices in claims.items():
        machine = inventory.get(node)
        record = cluster.get(node)
        for device in devices:
            disk = machine.disk(device) if machine is not None else None
            if machine is not None and disk is None:
                errors.append(f"{node} has no disk {device!r} (disks: "
                              f"{', '.join(d.name for d in machine.disks) or 'none'})")
                continue
            if disk is not None and disk.os_disk:
                errors.append(f"{node}:{device} holds the operating system and cannot be claimed")
            committed_owner = record.claims.get(device) if record else None
            if committed_owner and committed_owner != owner:
                errors.append(f"disk {device} on {node} is claimed by {committed_owner.replace('-', '/', 1)}")
            elif (node, device) in taken:
                errors.append(f"disk {device} on {node} is claimed by {taken[(node, device)]}")
    return errors


def find_cycle(start: ProposalRef, dependencies: Callable[[ProposalRef], Iterable[ProposalRef]]) -> list[str] | None:
    """A dependency cycle through ``start`` (as ``a -> b -> a``), or None.

    ``dependencies(ref)`` lists what ``ref`` depends on (nothing for an
    unknown proposal). The one cycle check, for saves, commits and scenarios.
    """
    stack: list[tuple[ProposalRef, list[str]]] = [(d, [str(start), str(d)]) for d in dependencies(start)]
    seen: set[ProposalRef] = set()
    while stack:
        ref, path = stack.pop()
        if ref == start:
            return path
        if ref in seen:
            continue
        seen.add(ref)
        stack.extend((d, [*path, str(d)]) for d in dependencies(ref))
    return None


def dependencies_among(proposals: Mapping[ProposalRef, Proposal],
                       context: Callable[[Proposal], Context]) -> Callable[[ProposalRef], list[ProposalRef]]:
    """``dependencies(ref)`` over a set of documents, for :func:`find_cycle`."""
    def dependencies(ref: ProposalRef) -> list[ProposalRef]:
        proposal = proposals.get(ref)
        if proposal is None:
            return []
        try:
            return list(proposal.definition.all_dependencies(proposal, context(proposal)))
        except CrowbarError:
            return []

    return dependencies


class Validator:
    """Validates proposals against the cluster (reads only)."""

    def __init__(self, reader: ClusterReader, store: ProposalStore, services: HookServices) -> None:
        self.reader = reader
        self.store = store
        self.services = services

    def validate(self, proposal: Proposal, *, cluster: ClusterView | None = None,
                 inventory: Inventory | None = None, draft: bool = False, ctx: Context | None = None) -> None:
        """Raise :class:`ValidationError` listing every problem with ``proposal``.

        A ``draft`` (saved, not committed) may still have too few machines in an
        element; a commit needs every element complete. ``ctx``: the context the
        barclamp's ``validate`` gets (a new one when not given).
        """
        subject = f"{proposal.barclamp}/{proposal.name}"
        errors = check_shape(proposal)
        if errors:
            raise ValidationError(errors, subject=subject)
        errors += check_attributes(proposal)
        cluster = cluster if cluster is not None else self.reader.view(proposal.nodes())
        errors += check_elements(proposal, cluster, draft=draft)
        if any(e.checks_machines for e in proposal.definition.elements if proposal.elements.get(e.name)):
            inventory = inventory if inventory is not None else self.reader.inventory(proposal.nodes(), view=cluster)
            errors += check_machines(proposal, inventory)
        documents: list[Proposal] | None = None

        def others() -> list[Proposal]:  # read once, and only when needed
            nonlocal documents
            if documents is None:
                documents = self.store.documents()
            return documents

        try:
            claims = {n: list(d) for n, d in proposal.definition.claims(proposal).items()}
        except CrowbarError as exc:
            claims = {}
            errors.append(str(exc))
        if claims:
            inventory = inventory if inventory is not None else self.reader.inventory(list(claims), view=cluster)
            errors += check_claims(proposal, claims, inventory, cluster, others())
        if not errors:  # the barclamp's checks may rely on valid settings
            ctx = ctx or self.services.context(proposal.definition, draft=draft)
            try:
                errors += list(proposal.definition.validate(proposal, ctx))
            except ValidationError as exc:
                errors += exc.errors
            if dependencies_among({proposal.ref: proposal}, lambda p: ctx)(proposal.ref):  # else no cycle through it
                docs = {p.ref: p for p in others()}
                docs[proposal.ref] = proposal
                cycle = find_cycle(proposal.ref, dependencies_among(
                    docs, lambda p: self.services.context(p.definition)))
                if cycle:
                    errors.append(f"dependency cycle: {' -> '.join(cycle)}")
        if errors:
            raise ValidationError(errors, subject=subject)


# -- setting one key at a time (CLI --set) ---------------------------------------------


def _field_for(model: type[BaseModel], path: list[str]) -> tuple[Any, bool]:
    """(annotation, found) of a dotted path in a model; dict fields accept any subkey."""
    current: Any = model
    value_model: Any = None  # after a dict of models: the next part is a key, then its model
    for index, part in enumerate(path):
        if value_model is not None:
            current, value_model = value_model, None
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _field_named(current, part)
            if field is None:
                return None, False
            current = field.annotation
            args = getattr(current, "__args__", ()) or ()
            if (getattr(current, "__origin__", None) in (dict, Mapping) and args
                    and isinstance(args[-1], type) and issubclass(args[-1], BaseModel)):
                value_model = args[-1]
                continue
            for inner in args:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
                    break
        elif getattr(current, "__origin__", None) in (dict, Mapping) or current is dict:
            return Any, True
        else:
            return None, index == len(path)
    return current, True


def _field_named(model: type[BaseModel], key: str) -> Any:
    """A model's field by its key in documents (its alias, or its name)."""
    for name, field in model.model_fields.items():
        if key in (field.alias, name):
            return field
    return None


def setting_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable dotted key of a model (as documents spell them)."""
    keys = []
    for field_name, field in model.model_fields.items():
        name = field.alias or field_name
        annotation = field.annotation
        nested = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                       if isinstance(a, type) and issubclass(a, BaseModel)
                       and a.__name__ != "SecretRef"), None)
        if nested is not None:
            keys += setting_keys(nested, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _wants_text(annotation: Any) -> bool:
    """Whether a field takes text (str, a Literal of strings, a union with str)."""
    origin = get_origin(annotation)
    if annotation is str:
        return True
    if origin is Annotated:
        return _wants_text(get_args(annotation)[0])
    if origin is Literal:
        return all(isinstance(a, str) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return any(_wants_text(a) for a in get_args(annotation))
    return False


def parse_setting(model: type[BaseModel], key: str, raw: Any) -> Any:
    """Check ``key`` exists and turn a command-line string into a value.

    Strings stay strings where the model wants a string; otherwise the text is
    read as YAML (so ``3``, ``true``, ``[a, b]`` and ``null`` work). The model
    validates the result when the proposal is saved.
    """
    annotation, found = _field_for(model, key.split("."))
    if not found:
        keys = setting_keys(model)
        close = difflib.get_close_matches(key, keys, 3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValidationError(f"unknown setting {key!r}; {hint}valid keys: {', '.join(keys)}")
    if not isinstance(raw, str):
        return raw
    if _wants_text(annotation) and raw not in ("null", "~"):
        return raw
    try:
        return load_yaml(raw, f"--set {key}") if raw.strip() else ""
    except ValidationError:
        return raw

