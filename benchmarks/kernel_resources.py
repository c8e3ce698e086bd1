"""Resources and logic depth of the kernel's control-side blocks, from Yosys ``synth_xilinx``.

    PYTHONPATH=. python benchmarks/kernel_resources.py [name ...]

Same method as ``benchmarks/memory_resources.py`` (LUTs, MUXF, flip-flops, block RAMs and
the longest LUT/MUXF chain between registers, carry chains excluded): an estimate that
catches a wide compare or mux on a handshake path, not Vivado timing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_resources import main                           # noqa: E402

from hlsinf.config import KernelConfig                      # noqa: E402
from hlsinf.modules.input_cache import InputCache           # noqa: E402
from hlsinf.modules.weights import ParameterLoader          # noqa: E402
from hlsinf.sequencer import Sequencer                      # noqa: E402

CFG = KernelConfig(cpi=8, cpo=8)
BLOCKS = {
    "Sequencer": lambda: Sequencer(CFG),
    "Sequencer(cache)": lambda: Sequencer(CFG, cache_pixels=16384),
    "ParameterLoader(8x8)": lambda: ParameterLoader(CFG),
    "InputCache(cpi=8, 16384)": lambda: InputCache(CFG, 16384),
}


if __name__ == "__main__":
    main(sys.argv[1:], BLOCKS)
