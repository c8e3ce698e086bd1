"""RTL simulation of the generated kernel: Verilator runner, cocotb benches, AXI memory models."""
