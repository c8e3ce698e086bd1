"""hlsinf: FPGA accelerators for pruned and quantised CNNs, generated with Amaranth.

Submodules are imported on demand, so ``import hlsinf`` stays cheap:
``hlsinf.config`` (design-time parameters), ``hlsinf.reference`` (the bit-exact
numpy model of one kernel call), ``hlsinf.gateware`` (the dataflow stages).
"""

__version__ = "0.1.0"
