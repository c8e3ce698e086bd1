"""ParameterLoader: weight sets, bias and multipliers read from one AXI memory, routed by kind."""

import random

import numpy as np
import pytest

from hlsinf import reference as ref
from hlsinf.config import KernelConfig
from hlsinf.gateware.memory.weights import ParameterLoader
from hlsinf.gateware.sequencer import WeightKind, weight_set_bytes


from hlsinf.sim.axi_memory import AXIMemory, run
from hlsinf.sim.streams import collect, feed


def layer_images(cfg, rng, O, I):
    w = rng.integers(*cfg.weight_range, (O, I, 3, 3), endpoint=True)
    b = rng.integers(*cfg.bias_range, O, endpoint=True)
    mlt = rng.integers(0, 1 << 32, O, dtype=np.uint64).astype(np.uint32)
    return (ref.pack_weights(w, cfg.cpi, cfg.cpo, ref.weight_dtype(cfg), bits=cfg.weight_bits),
            ref.pack_channels(b, cfg.cpo, ref.bias_dtype(cfg)),
            ref.pack_channels(mlt, cfg.cpo, np.uint32))


@pytest.mark.parametrize("cfg, use_mult, stall", [
    (KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16), True, 0.3),
    (KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16), False, 0.0),
    (KernelConfig(cpi=8, cpo=2, bias_bits=16, mult_bits=9, imax=64, wmax=16, hmax=16), True, 0.3),
    (KernelConfig.from_format("int4", cpi=4, cpo=4, imax=64, wmax=16, hmax=16), True, 0.3),
    (KernelConfig.from_format("uint4", cpi=2, cpo=2, imax=64, wmax=16, hmax=16), False, 0.3),
])
def test_items_match_memory(cfg, use_mult, stall):
    rng = np.random.default_rng(5)
    I, O = 3 * cfg.cpi - 1, 3 * cfg.cpo
    gi, go = -(-I // cfg.cpi), -(-O // cfg.cpo)
    w_mem, b_mem, m_mem = layer_images(cfg, rng, O, I)
    base = {"w": 0x1000 - 37, "b": 0x3000 + 3, "m": 0x4000 - 1}
    mem = np.zeros(0x5000, np.uint8)
    for name, image in (("w", w_mem), ("b", b_mem), ("m", m_mem)):
        raw = image.view(np.uint8)
        mem[base[name]: base[name] + raw.size] = raw
    groups = [1, 2, 0]                      # any order of output groups
    set_bytes = weight_set_bytes(cfg)
    bias_bytes = cfg.bias_bits // 8
    commands = []
    for og in groups:
        commands.append({"addr": base["b"] + og * cfg.cpo * bias_bytes, "length": cfg.cpo * bias_bytes,
                         "kind": WeightKind.BIAS})
        if use_mult:
            commands.append({"addr": base["m"] + og * cfg.cpo * 4, "length": cfg.cpo * 4, "kind": WeightKind.MULT})
        commands.append({"addr": base["w"] + og * gi * set_bytes, "length": gi * set_bytes,
                         "kind": WeightKind.WEIGHTS})

    w_el = ref.unpack_nibbles(w_mem, True) if cfg.weight_bits == 4 else w_mem   # 4-bit: low nibble first
    sets = w_el.reshape(go, gi, cfg.cpo, cfg.cpi, 9)
    want_w = [sets[og, g].tolist() for og in groups for g in range(gi)]
    want_b = [b_mem.reshape(go, cfg.cpo)[og].tolist() for og in groups]
    want_m = [(m_mem.reshape(go, cfg.cpo)[og] & ((1 << cfg.mult_bits) - 1)).tolist() for og in groups] if use_mult else []

    dut = ParameterLoader(cfg)
    memory = AXIMemory(mem, latency=5, stall=stall, seed=3)
    got = {}

    async def send(ctx):
        await feed(ctx, dut.cmd, commands, stall=stall, rng=random.Random(1))

    def lanes(value):
        return [[[int(t) for t in c] for c in o] for o in value]

    async def take_w(ctx):
        got["w"], _ = await collect(ctx, dut.weights, len(want_w), stall=stall, rng=random.Random(2), convert=lanes)

    async def take_b(ctx):
        got["b"], _ = await collect(ctx, dut.bias, len(want_b), stall=stall, rng=random.Random(3),
                                    convert=lambda v: [int(x) for x in v])

    async def take_m(ctx):
        got["m"], _ = await collect(ctx, dut.mult, len(want_m), stall=stall, rng=random.Random(4),
                                    convert=lambda v: [int(x) for x in v])

    run(dut, [send, take_w, take_b, take_m], [(memory, dut.axi)], max_cycles=20000)
    assert got == {"w": want_w, "b": want_b, "m": want_m}
    assert not memory.writes
