"""How many cores (vCPUs) a VM size has: what the account's core quotas count (quotas.py).

The emulator runs every node on this machine whatever its `vmSize`; only the quotas read it. Azure's size names
say their vCPUs: `Standard_<family><vCPUs>[-<constrained vCPUs>]<features>[_<accelerator>][_v<version>]`, so
`Standard_D2s_v3` has 2, `Standard_E8-4ds_v5` 4 (a constrained size keeps 4 of 8 active), `Standard_HB120rs_v3`
120 (learn.microsoft.com/azure/virtual-machines/vm-naming-conventions). The older sizes whose number is a rank,
not a vCPU count, are listed (learn.microsoft.com/azure/virtual-machines/sizes-previous-gen, and the Av1, Dv1,
Dv2 and G series pages). A name that fits neither counts as DEFAULT_CORES.
"""

from __future__ import annotations

import re

DEFAULT_CORES = 2  # an unknown size: as the smallest general-purpose sizes Batch pools commonly use

# Sizes before the naming rule, by family and number: Av1 (no version), Dv1/Dv2 and DSv1/DSv2, G and GS.
_RANKED = {
    "a": {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 8: 8, 9: 16, 10: 8, 11: 16},
    "d": {1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 11: 2, 12: 4, 13: 8, 14: 16, 15: 20},
    "g": {1: 2, 2: 4, 3: 8, 4: 16, 5: 32},
}
_RANKED_VERSIONS = {"a": ("",), "d": ("", "2"), "g": ("",)}
_NAME = re.compile(r"^(?:standard|basic)_([a-z]+?)(\d+)(?:-(\d+))?[a-z]*(?:_[a-z0-9]+?)*?(?:_v(\d+))?$")


def cores(vm_size: str | None) -> int:
    """The vCPUs of `vm_size` (any case), DEFAULT_CORES for a name this cannot read."""
    m = _NAME.match((vm_size or "").strip().lower())
    if m is None:
        return DEFAULT_CORES
    family, number, constrained, version = m.group(1), int(m.group(2)), m.group(3), m.group(4) or ""
    base = family[:-1] if family in ("ds", "gs") else family
    if base in _RANKED and version in _RANKED_VERSIONS[base]:
        return _RANKED[base].get(number, DEFAULT_CORES)
    if constrained:
        return int(constrained)
    return number if number > 0 else DEFAULT_CORES
