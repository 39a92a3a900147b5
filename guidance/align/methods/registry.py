"""Every ``--method`` by name: the one place a method is added (its declaration module, then a line here).

The trainer builds a run's task through its method here, and ``nrg align`` adds each option group's
flags from here; neither names a method. Torch-free.
"""

from __future__ import annotations

from guidance.align.methods import dro, flow_dpo, flow_rwr, hybrid, spo, spro, sudo
from guidance.align.methods.base import Method, Options

#: method name -> its declaration, in the order ``--help`` and docs/align.md list them.
REGISTRY: dict[str, Method] = {method.name: method for method in (
    flow_dpo.FLOW_DPO,
    flow_rwr.FLOW_RWR,
    dro.DIFFUSION_DRO,
    sudo.SUDO,
    flow_dpo.ABC,
    spo.SPO,
    spo.GRADSPO,
    spro.SPRO,
    hybrid.HYBRID,
)}
METHODS: tuple[str, ...] = tuple(REGISTRY)
#: Every option group, in the order of the methods that first take them (the order of ``--help``).
OPTION_GROUPS: tuple[type[Options], ...] = tuple(dict.fromkeys(kind for m in REGISTRY.values() for kind in m.options))


def methods_taking(kind: type[Options]) -> tuple[str, ...]:
    """The names of the methods that take an option group."""
    return tuple(name for name, method in REGISTRY.items() if kind in method.options)
