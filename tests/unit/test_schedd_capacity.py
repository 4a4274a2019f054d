"""The pool capacity the plugin reports in its ping (the virtual node's capacity), from
collector slot ads."""

from __future__ import annotations

# -- capacity -----------------------------------------------------------------------------------


def test_capacity_counts_partitionable_slots_by_their_totals() -> None:
    """While a job starts, the partitionable slot already advertises what is left and its new
    dynamic slot is not in the collector yet: the capacity (the virtual node's) must not dip."""
    from interlink_htcondor.service.gateway import capacity_of

    pslot = {
        "SlotType": "Partitionable",
        "Cpus": 7,
        "Memory": 14336,
        "GPUs": 0,
        "TotalSlotCpus": 8,
        "TotalSlotMemory": 16384,
        "TotalSlotGPUs": 0,
    }
    dslot = {
        "SlotType": "Dynamic",
        "Cpus": 1,
        "Memory": 2048,
        "TotalSlotCpus": 1,
        "TotalSlotMemory": 2048,
    }
    static = {"SlotType": "Static", "Cpus": 2, "Memory": 1000, "GPUs": 1}
    assert capacity_of([pslot]).cpus == 8  # the dynamic slot's ad not there yet
    both = capacity_of([pslot, dslot])  # and once it is: not counted twice
    assert (both.cpus, both.memory_mib, both.slots) == (8, 16384, 1)
    mixed = capacity_of([pslot, dslot, static])
    assert (mixed.cpus, mixed.memory_mib, mixed.gpus, mixed.slots) == (10, 17384, 1, 2)
    assert mixed.largest["Cpus"] == 8 and mixed.largest["Memory"] == 16384
