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


@pytest.mark.parametrize("depthwise, stall", [(1, 0.3), (1, 0.0), (0, 0.3)])
def test_depthwise_weights_go_on_the_diagonal(depthwise, stall):
    """A kernel built with depthwise: in a depthwise call a weight command's [CPO][3][3] bytes
    become one weight set, zero but for lane o of output o; dense calls are unchanged."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16, with_depthwise=True)
    rng = np.random.default_rng(7)
    C = 3 * cfg.cpo - 1
    go = -(-C // cfg.cpo)
    w_dense, b_mem, _ = layer_images(cfg, rng, C, C)
    w_dw = ref.pack_depthwise_weights(rng.integers(*cfg.weight_range, (C, 1, 3, 3), endpoint=True), cfg.cpo,
                                      ref.weight_dtype(cfg))
    w_mem = w_dw if depthwise else w_dense
    base = {"w": 0x1000 - 37, "b": 0x3000 + 3}
    mem = np.zeros(0x4000, np.uint8)
    for name, image in (("w", w_mem), ("b", b_mem)):
        raw = image.view(np.uint8)
        mem[base[name]: base[name] + raw.size] = raw
    groups = [2, 0, 1]
    group_bytes = cfg.cpo * 9 if depthwise else go * weight_set_bytes(cfg)
    commands = []
    for og in groups:
        commands.append({"addr": base["b"] + og * cfg.cpo * 4, "length": cfg.cpo * 4, "kind": WeightKind.BIAS})
        commands.append({"addr": base["w"] + og * group_bytes, "length": group_bytes, "kind": WeightKind.WEIGHTS})
    if depthwise:       # numpy: the diagonal of a CPO x CPI x 9 set
        want_w = []
        for og in groups:
            s = np.zeros((cfg.cpo, cfg.cpi, 9), np.int64)
            s[np.arange(cfg.cpo), np.arange(cfg.cpo)] = w_dw.reshape(go, cfg.cpo, 9)[og]
            want_w.append(s.tolist())
    else:
        sets = w_dense.reshape(go, go, cfg.cpo, cfg.cpi, 9)
        want_w = [sets[og, g].tolist() for og in groups for g in range(go)]
    want_b = [b_mem.reshape(go, cfg.cpo)[og].tolist() for og in groups]

    dut = ParameterLoader(cfg)
    memory = AXIMemory(mem, latency=5, stall=stall, seed=4)
    got = {}

    async def send(ctx):
        ctx.set(dut.depthwise, depthwise)
        await feed(ctx, dut.cmd, commands, stall=stall, rng=random.Random(1))

    async def take_w(ctx):
        got["w"], _ = await collect(ctx, dut.weights, len(want_w), stall=stall, rng=random.Random(2),
                                    convert=lambda v: [[[int(t) for t in c] for c in o] for o in v])

    async def take_b(ctx):
        got["b"], _ = await collect(ctx, dut.bias, len(want_b), stall=stall, rng=random.Random(3),
                                    convert=lambda v: [int(x) for x in v])

    run(dut, [send, take_w, take_b], [(memory, dut.axi)], max_cycles=20000)
    assert got == {"w": want_w, "b": want_b}


def test_depthwise_weights_throughput():
    """Throughput: 32 groups' depthwise weights in one command come out at least one set every
    2 cycles after the memory latency (BytesToItems of 36-byte items; a dense 4x4 set, 144
    bytes, takes 2.25 beats). A frame is rows * W >= 1 cycles, and rarely fewer than tens."""
    cfg = KernelConfig(cpi=4, cpo=4, imax=64, wmax=16, hmax=16, with_depthwise=True)
    rng = np.random.default_rng(8)
    n = 32
    w = rng.integers(*cfg.weight_range, (n * cfg.cpo, 1, 3, 3), endpoint=True)
    w_mem = ref.pack_depthwise_weights(w, cfg.cpo, ref.weight_dtype(cfg))
    mem = np.zeros(0x2000, np.uint8)
    mem[0x100: 0x100 + w_mem.size] = w_mem.view(np.uint8)
    dut = ParameterLoader(cfg)
    memory = AXIMemory(mem, latency=5, stall=0.0, seed=1)
    got = {}

    async def send(ctx):
        ctx.set(dut.depthwise, 1)
        await feed(ctx, dut.cmd, [{"addr": 0x100, "length": w_mem.size, "kind": WeightKind.WEIGHTS}])

    async def take(ctx):
        got["w"], got["cycles"] = await collect(ctx, dut.weights, n, convert=lambda v: [
            [[int(t) for t in c] for c in o] for o in v])

    run(dut, [send, take], [(memory, dut.axi)], max_cycles=5000)
    for g, item in enumerate(got["w"]):
        want = np.zeros((cfg.cpo, cfg.cpi, 9), np.int64)
        want[np.arange(cfg.cpo), np.arange(cfg.cpo)] = w_mem.reshape(n, cfg.cpo, 9)[g]
        assert item == want.tolist()
    print(f"{n} depthwise sets in {got['cycles']} cycles")
    assert got["cycles"] <= 2 * n + 20
