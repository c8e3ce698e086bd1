"""Resources and logic depth of the kernel's control-side blocks, each synthesised on its own.

    PYTHONPATH=. python benchmarks/kernel_resources.py [name ...]

Same table as ``benchmarks/memory_resources.py`` (through ``hlsinf.build.resources.component_report``:
counts, LUT levels between registers outside carry chains with the make-up of that path, the
longest carry path): an estimate that catches a wide compare or mux on a handshake path, not
Vivado timing.
"""

import sys


from memory_resources import main

from hlsinf.config import KernelConfig
from hlsinf.gateware.stages.input_cache import InputCache
from hlsinf.gateware.memory.weights import ParameterLoader
from hlsinf.gateware.sequencer import Sequencer

CFG = KernelConfig(cpi=8, cpo=8)
BLOCKS = {
    "Sequencer": lambda: Sequencer(CFG),
    "Sequencer(cache)": lambda: Sequencer(CFG, cache_pixels=16384),
    "ParameterLoader(8x8)": lambda: ParameterLoader(CFG),
    "InputCache(cpi=8, 16384)": lambda: InputCache(CFG, 16384),
}


if __name__ == "__main__":
    main(sys.argv[1:], BLOCKS)
