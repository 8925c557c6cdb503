"""The strict shape of a whole proposal document, per barclamp.

A pure check (no Chef server, no model imports): given a barclamp's name, its
element names and (optionally) its pydantic attribute model, it looks at every
key, type and allowed value of a document in Crowbar's shape (see
:mod:`barclamp_sdk.document`) and returns *every* problem, each with its path::

    deployment.nova.element_order: must be a list of lists of element names
    notes[2]: must be a string

The document::

    id           "bc-<barclamp>-<name>"
    description  string
    notes        list of strings
    attributes   {<barclamp>: object}                  (no other barclamp)
    deployment   {<barclamp>: {
        crowbar-revision        integer >= 0
        crowbar-status          "success" | "failed"   (written by commits)
        crowbar-failed          string                 (written by commits)
        crowbar-queued          boolean                (written by the queue)
        crowbar-rollout         object                 (a rollout's waves, written by commits)
        rollout                 {wave: integer >= 1, max_failures: integer >= 1,
                                 timeout: seconds > 0}  (commit in waves: docs/operator.md)
        elements                {element: [machine names]}
        element_order           [[element, ...], ...]
        element_run_list_order  {element: integer}
        element_states          {element: [state, ...]}
        config                  {environment: string, not "_default",
                                 mode: string, transitions: boolean,
                                 transition_list: [state, ...]}}}
    chef_type, data_bag         what Chef adds to a data bag item

Anything else is refused: unknown keys at any level of the document's frame,
and another barclamp's ``attributes`` or ``deployment``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

TOP_LEVEL_KEYS = ("id", "description", "notes", "attributes", "deployment", "chef_type", "data_bag")
DEPLOYMENT_KEYS = ("crowbar-revision", "crowbar-status", "crowbar-failed", "crowbar-queued", "crowbar-rollout",
                   "elements", "element_order", "element_run_list_order", "element_states", "config", "rollout")
ROLLOUT_KEYS = ("wave", "max_failures", "timeout")
CONFIG_KEYS = ("environment", "mode", "transitions", "transition_list")
STATUSES = ("success", "failed", "interrupted")
#: Chef's own environment: a proposal never deploys into it.
DEFAULT_ENVIRONMENT = "_default"
MAX_TEXT = 64 * 1024


@dataclass(frozen=True)
class ProposalSchema:
    """What one barclamp's proposal documents may hold."""

    barclamp: str
    elements: tuple[str, ...]
    attributes: type[BaseModel] | None = None

    def check(self, document: Any, *, name: str | None = None) -> list[str]:
        """Every problem with ``document`` (empty: it has the right shape)."""
        return check_document(document, self, name=name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _key(key: Any) -> str:
    """A key as it appears in a path: as is when plain, quoted when odd (spaces, newlines, empty)."""
    plain = isinstance(key, str) and key and key.isprintable() and not any(c.isspace() for c in key)
    return key if plain else repr(key)


def _unknown(keys: Iterable[Any], allowed: Iterable[str], where: str) -> list[str]:
    allowed = tuple(allowed)
    return [f"{where}{_key(key)}: unknown key (allowed: {', '.join(allowed)})"
            for key in keys if key not in allowed]


def _text(value: Any, where: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: must be a string"]
    if len(value) > MAX_TEXT:
        return [f"{where}: is longer than {MAX_TEXT:,} characters"]
    return []


def check_document(document: Any, schema: ProposalSchema, *, name: str | None = None) -> list[str]:
    """Every problem with a whole proposal ``document`` of ``schema.barclamp``.

    ``name``, when given, is the proposal the document must belong to (its id
    must be ``bc-<barclamp>-<name>``).
    """
    bc = schema.barclamp
    if not isinstance(document, dict):
        return ["the document: must be an object (id, description, attributes, deployment ...)"]
    errors = _unknown(document, TOP_LEVEL_KEYS, "")
    prefix = f"bc-{bc}-"
    doc_id = document.get("id")
    if "id" not in document:
        errors.append(f"id: missing (it is {prefix}NAME)")
    elif not isinstance(doc_id, str) or not doc_id.startswith(prefix) or doc_id == prefix:
        errors.append(f"id: must be a string {prefix}NAME")
    elif name is not None and doc_id != prefix + name:
        errors.append(f"id: the document's id must stay {prefix + name!r}")
    if "description" in document:
        errors += _text(document["description"], "description")
    notes = document.get("notes", [])
    if not isinstance(notes, list):
        errors.append("notes: must be a list of strings")
    else:
        for index, note in enumerate(notes):
            errors += _text(note, f"notes[{index}]")
    for key in ("chef_type", "data_bag"):
        if key in document and not isinstance(document[key], str):
            errors.append(f"{key}: must be a string")
    errors += _check_attributes(document, schema)
    errors += _check_deployment(document, schema)
    return errors


def _check_attributes(document: dict[str, Any], schema: ProposalSchema) -> list[str]:
    bc = schema.barclamp
    attributes = document.get("attributes")
    if "attributes" not in document:
        return [f"attributes: missing (it holds {bc}'s settings: attributes.{bc})"]
    if not isinstance(attributes, dict):
        return [f"attributes: must be an object holding only {bc!r}"]
    errors = [f"attributes.{_key(key)}: not allowed in a {bc} proposal (only attributes.{bc})"
              for key in attributes if key != bc]
    settings = attributes.get(bc)
    if bc not in attributes:
        errors.append(f"attributes.{bc}: missing")
    elif not isinstance(settings, dict):
        errors.append(f"attributes.{bc}: must be an object of settings")
    elif schema.attributes is not None:
        try:
            schema.attributes.model_validate(settings)
        except PydanticValidationError as exc:
            for error in exc.errors():
                path = ".".join(_key(str(p)) for p in error["loc"])
                message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
                errors.append(f"attributes.{bc}{'.' + path if path else ''}: {message}")
    return errors


def _check_deployment(document: dict[str, Any], schema: ProposalSchema) -> list[str]:
    bc = schema.barclamp
    deployment = document.get("deployment")
    if "deployment" not in document:
        return [f"deployment: missing (it holds deployment.{bc}: elements, order, states)"]
    if not isinstance(deployment, dict):
        return [f"deployment: must be an object holding only {bc!r}"]
    errors = [f"deployment.{_key(key)}: not allowed in a {bc} proposal (only deployment.{bc})"
              for key in deployment if key != bc]
    if bc not in deployment:
        return [*errors, f"deployment.{bc}: missing"]
    part = deployment[bc]
    where = f"deployment.{bc}"
    if not isinstance(part, dict):
        return [*errors, f"{where}: must be an object (elements, element_order, ...)"]
    errors += _unknown(part, DEPLOYMENT_KEYS, f"{where}.")
    known = set(schema.elements)
    names = ", ".join(schema.elements) or "none"

    def element_key(key: Any, at: str) -> list[str]:
        return [] if key in known else [f"{at}: unknown element {key!r} (elements: {names})"]

    for key in ("crowbar-revision",):
        if key in part and (not _is_int(part[key]) or part[key] < 0):
            errors.append(f"{where}.{key}: must be an integer >= 0")
    if "crowbar-status" in part and part["crowbar-status"] not in STATUSES:
        errors.append(f"{where}.crowbar-status: must be one of {', '.join(STATUSES)}")
    if "crowbar-failed" in part:
        errors += _text(part["crowbar-failed"], f"{where}.crowbar-failed")
    if "crowbar-queued" in part and not isinstance(part["crowbar-queued"], bool):
        errors.append(f"{where}.crowbar-queued: must be true or false")
    if "crowbar-rollout" in part and not isinstance(part["crowbar-rollout"], dict):
        errors.append(f"{where}.crowbar-rollout: must be an object (written by commits in waves)")
    errors += _check_rollout(part, where)

    elements = part.get("elements", {})
    if not isinstance(elements, dict):
        errors.append(f"{where}.elements: must map element names to lists of machine names")
    else:
        for element, members in elements.items():
            errors += element_key(element, f"{where}.elements.{_key(element)}")
            if not _is_str_list(members):
                errors.append(f"{where}.elements.{_key(element)}: must be a list of machine names")

    order = part.get("element_order", [])
    if not isinstance(order, list) or not all(isinstance(batch, list) for batch in order):
        errors.append(f"{where}.element_order: must be a list of lists of element names")
    else:
        for index, batch in enumerate(order):
            for position, element in enumerate(batch):
                at = f"{where}.element_order[{index}][{position}]"
                errors += (element_key(element, at) if isinstance(element, str)
                           else [f"{at}: must be an element name"])

    priorities = part.get("element_run_list_order", {})
    if not isinstance(priorities, dict):
        errors.append(f"{where}.element_run_list_order: must map element names to integers")
    else:
        for element, priority in priorities.items():
            errors += element_key(element, f"{where}.element_run_list_order.{_key(element)}")
            if not _is_int(priority):
                errors.append(f"{where}.element_run_list_order.{_key(element)}: must be an integer")

    states = part.get("element_states", {})
    if not isinstance(states, dict):
        errors.append(f"{where}.element_states: must map element names to lists of states")
    else:
        for element, listed in states.items():
            errors += element_key(element, f"{where}.element_states.{_key(element)}")
            if not _is_str_list(listed):
                errors.append(f"{where}.element_states.{_key(element)}: must be a list of states")

    config = part.get("config", {})
    if not isinstance(config, dict):
        errors.append(f"{where}.config: must be an object ({', '.join(CONFIG_KEYS)})")
    else:
        errors += _unknown(config, CONFIG_KEYS, f"{where}.config.")
        if "environment" in config:
            environment = config["environment"]
            if not isinstance(environment, str) or not environment:
                errors.append(f"{where}.config.environment: must be a non-empty string")
            elif environment == DEFAULT_ENVIRONMENT:
                errors.append(f"{where}.config.environment: must not be Chef's {DEFAULT_ENVIRONMENT!r} "
                              f"(use {bc}-config-NAME)")
        if "mode" in config and not isinstance(config["mode"], str):
            errors.append(f"{where}.config.mode: must be a string")
        if "transitions" in config and not isinstance(config["transitions"], bool):
            errors.append(f"{where}.config.transitions: must be true or false")
        if "transition_list" in config and not _is_str_list(config["transition_list"]):
            errors.append(f"{where}.config.transition_list: must be a list of states")
    return errors


def _check_rollout(part: dict[str, Any], where: str) -> list[str]:
    """``rollout``: how the proposal is committed in waves."""
    if "rollout" not in part:
        return []
    rollout = part["rollout"]
    at = f"{where}.rollout"
    if not isinstance(rollout, dict):
        return [f"{at}: must be an object ({', '.join(ROLLOUT_KEYS)})"]
    errors = _unknown(rollout, ROLLOUT_KEYS, f"{at}.")
    if "wave" not in rollout:
        errors.append(f"{at}.wave: missing (machines per wave)")
    for key in ("wave", "max_failures"):
        if key in rollout and (not _is_int(rollout[key]) or rollout[key] < 1):
            errors.append(f"{at}.{key}: must be an integer >= 1")
    timeout = rollout.get("timeout", 1)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        errors.append(f"{at}.timeout: must be a number of seconds > 0")
    return errors
