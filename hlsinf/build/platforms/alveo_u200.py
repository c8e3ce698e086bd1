"""The Xilinx Alveo U200 data-centre card, as an Amaranth platform.

In the Vitis flow the kernel never touches a pin: the shell (the *platform* in Vitis'
words) drives ``ap_clk``/``ap_rst_n``, owns PCIe, and routes each AXI master to one DDR4
bank. So this class carries no I/O resources; what it does carry are the facts the build
needs: the part, the kernel clock, the fabric totals (for the resource report), the DDR
banks (for the ``v++`` link) and the Vitis platform name. Another board is another class
like this one; :mod:`hlsinf.build.platforms.vitis` reads only the attributes defined here.
"""

from __future__ import annotations

from amaranth.vendor import XilinxPlatform

__all__ = ["AlveoU200Platform"]


class AlveoU200Platform(XilinxPlatform):
    """Alveo U200 (XCU200-FSGD2104-2-E) under the ``gen3x16_xdma`` shell."""

    device = "xcu200"
    package = "fsgd2104"
    speed = "2-e"

    #: The kernel has no board pins: the Vitis shell provides every connection.
    resources = []
    connectors = []

    #: Kernel clock (``ap_clk``) requested from the shell, in Hz. Shadows
    #: ``Platform.default_clk_frequency``, which would otherwise look for a clock pin.
    default_clk_frequency = 300e6

    #: Vitis platform the ``v++ --link`` step targets.
    vitis_platform = "xilinx_u200_gen3x16_xdma_2_202110_1"

    #: Yosys ``synth_xilinx -family`` value for this part (UltraScale+).
    yosys_family = "xcup"

    #: Fabric totals of the XCU200, the denominators of the resource report.
    #: BRAM is counted in 36 Kib blocks (one RAMB36 = two RAMB18).
    fabric = {
        "LUT": 1_182_240,
        "FF": 2_364_480,
        "DSP48E2": 6_840,
        "BRAM36": 2_160,
        "URAM": 960,
    }

    #: Memory banks the shell exposes to kernels, as ``v++`` ``sp=`` names: four 16 GiB
    #: DDR4-2400 channels, each 64 bits wide.
    memory_banks = ("DDR[0]", "DDR[1]", "DDR[2]", "DDR[3]")

    #: Banks that hold activations. One layer's output buffer is the next layer's input,
    #: so ``gmem_in`` and ``gmem_out`` must both reach every activation bank; the host
    #: alternates a network's activation buffers between them (layer k reads bank k % 2
    #: and writes bank (k + 1) % 2), so within one call the input and output streams still
    #: use different DDR controllers.
    activation_banks = ("DDR[0]", "DDR[1]")

    #: Which banks each AXI master bundle of the kernel is linked to, as ``v++`` ``sp=``
    #: tags (``DDR[0:1]`` is the range of banks 0 and 1). Weights, bias and multipliers
    #: have a bank of their own.
    bundle_banks = {
        "gmem_in": "DDR[0:1]",
        "gmem_w": "DDR[2]",
        "gmem_out": "DDR[0:1]",
    }

    @property
    def part(self) -> str:
        """Full part name as Vivado spells it, e.g. ``xcu200-fsgd2104-2-e``."""
        return self._part

    def bank_of(self, bundle: str) -> str:
        """DDR bank(s) of an AXI master bundle as an ``sp=`` tag; a bundle this board does not
        place is an error."""
        try:
            return self.bundle_banks[bundle]
        except KeyError:
            raise ValueError(f"{type(self).__name__}: no DDR bank for AXI bundle {bundle!r}; "
                             f"known bundles: {sorted(self.bundle_banks)}") from None
