"""The kernel top level: the dataflow stages, the AXI masters and the control slave under
the port names Vitis expects of an RTL kernel.

Vitis finds a kernel's interfaces by port name (``ap_clk``, ``ap_rst_n``, ``interrupt``,
``s_axi_control_*``, ``m_axi_<bundle>_*``), so the top level's signature is flat: every
leaf of the AXI signatures becomes one member named ``<prefix>_<leaf>``, and
:func:`connect_flat` wires those members to the nested interfaces of the sub-components.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["flat_members", "connect_flat", "vitis_clock_domain"]


def flat_members(prefix: str, signature: wiring.Signature) -> dict[str, wiring.Member]:
    """Port members of ``signature`` flattened to ``{prefix + "_" + leaf: member}``.

    Directions are as seen by the component that owns an interface of ``signature``:
    pass ``sig.flip()`` for an interface the top level receives.
    """
    members = {}
    for path, member in signature.members.flatten():
        if not member.is_port:
            continue
        name = prefix + "_" + "_".join(str(part) for part in path)
        if name in members:
            raise ValueError(f"flattening {prefix!r} gives the port name {name!r} twice")
        members[name] = member
    return members


def connect_flat(m: Module, top, prefix: str, interface) -> None:
    """Drive ``interface`` (a sub-component's) from / onto the flat ports ``prefix_*`` of ``top``.

    The flat port has the same direction as the interface member it stands for: an output
    of the sub-component leaves the top level, an input enters it.
    """
    for path, member, value in interface.signature.flatten(interface):
        name = prefix + "_" + "_".join(str(part) for part in path)
        port = getattr(top, name)
        if member.flow == Out:
            m.d.comb += port.eq(value)
        else:
            m.d.comb += value.eq(port)


def vitis_clock_domain(m: Module, ap_clk: Signal, ap_rst_n: Signal, name: str = "sync") -> ClockDomain:
    """Define clock domain ``name`` clocked by ``ap_clk`` with the active-low ``ap_rst_n``.

    Vitis holds ``ap_rst_n`` low for several cycles, synchronous to ``ap_clk``; it is
    registered once so its fan-out does not sit on the input path.
    """
    cd = ClockDomain(name)
    m.domains += cd
    rst_q = Signal(init=1)
    rst_cd = ClockDomain(f"{name}_rst_sync", reset_less=True)
    m.domains += rst_cd
    m.d.comb += [cd.clk.eq(ap_clk), rst_cd.clk.eq(ap_clk), cd.rst.eq(rst_q)]
    m.d[rst_cd.name] += rst_q.eq(~ap_rst_n)
    return cd
