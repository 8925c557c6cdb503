"""sushy-tools' Redfish emulator, with BIOS settings for its fake driver.

Run as ``python -m barclamp_sdk.testing.redfish_emulator --config FILE``
(the same arguments as ``sushy-emulator``). Two patches, as the test-peer
notes describe, and nothing else:

1. the fake driver keeps each system's BIOS attributes in its system record
   (``bios``, initial values from the config) instead of answering 501, and
   refuses attributes the registry does not know with 400, as a BMC does;
2. the BIOS resources name their attribute registry as the registry file is
   actually called, and the registry lists Dell PowerEdge BIOS attributes
   (``SUSHY_EMULATOR_BIOS_REGISTRY`` in the config), so pyghmi can read and
   validate settings.
"""

from __future__ import annotations

import json
from typing import Any

from sushy_tools import error
from sushy_tools.emulator import main
from sushy_tools.emulator.resources.systems import fakedriver

REGISTRY_ID = "BiosAttributeRegistry.v1_0_0"

#: Dell PowerEdge BIOS attributes (Redfish names) and their allowed values.
POWEREDGE_ATTRIBUTES: dict[str, list[str]] = {
    "BootMode": ["Bios", "Uefi"],
    "SysProfile": ["PerfPerWattOptimizedDapc", "PerfPerWattOptimizedOs", "PerfOptimized",
                   "DenseCfgOptimized", "Custom"],
    "LogicalProc": ["Enabled", "Disabled"],
    "ProcVirtualization": ["Enabled", "Disabled"],
    "SriovGlobalEnable": ["Enabled", "Disabled"],
    "ProcTurboMode": ["Enabled", "Disabled"],
    "EmbSata": ["Off", "AhciMode", "RaidMode"],
    "MemOpMode": ["OptimizerMode", "SpareMode", "MirrorMode"],
    "ProcX2Apic": ["Enabled", "Disabled"],
}


def registry(attributes: dict[str, list[str]]) -> dict[str, Any]:
    """A Redfish AttributeRegistry listing enumerated attributes."""
    return {
        "@odata.type": "#AttributeRegistry.v1_1_1.AttributeRegistry",
        "@odata.id": "/redfish/v1/Systems/Bios/BiosRegistry",
        "Id": REGISTRY_ID,
        "Name": "BIOS Attribute Registry",
        "Language": "en",
        "OwningEntity": "Dell",
        "RegistryVersion": "1.1.1",
        "RegistryEntries": {
            "Attributes": [
                {"AttributeName": name, "DisplayName": name, "Type": "Enumeration", "ReadOnly": False,
                 "Hidden": False, "Immutable": False, "WriteOnly": False, "CurrentValue": None,
                 "Value": [{"ValueName": v, "ValueDisplayName": v} for v in values]}
                for name, values in attributes.items()
            ],
            "Dependencies": [],
        },
    }


def _known() -> dict[str, list[str]]:
    return main.app.config.get("SUSHY_EMULATOR_BIOS_REGISTRY") or POWEREDGE_ATTRIBUTES


def get_bios(self: fakedriver.FakeDriver, identity: str) -> dict[str, Any]:
    return dict(self._get(identity).get("bios") or {})


def set_bios(self: fakedriver.FakeDriver, identity: str, attributes: dict[str, Any]) -> None:
    known = _known()
    for name, value in (attributes or {}).items():
        if name not in known:
            raise error.BadRequest(f"BIOS attribute {name} is not supported")
        if value not in known[name]:
            raise error.BadRequest(f"{value} is not a valid value for {name}")
    system = self._get(identity)
    bios = dict(system.get("bios") or {})
    bios.update(attributes or {})
    self._update(system, bios=bios)


def reset_bios(self: fakedriver.FakeDriver, identity: str) -> None:
    system = self._get(identity)
    self._update(system, bios=dict(system.get("bios_defaults") or system.get("bios") or {}))


def _patch() -> None:
    fakedriver.FakeDriver.get_bios = get_bios
    fakedriver.FakeDriver.set_bios = set_bios
    fakedriver.FakeDriver.reset_bios = reset_bios
    original = main.app.render_template

    def render_template(template_name: str, /, **params: Any) -> str:
        if template_name == "bios_registry.json":
            return json.dumps(registry(_known()))
        text = original(template_name, **params)
        if template_name in ("bios.json", "bios_settings.json"):
            text = text.replace("BiosAttributeRegistryP89.v1_0_0", REGISTRY_ID)
        return text

    main.app.render_template = render_template  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch()
    main.main()
