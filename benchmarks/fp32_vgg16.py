"""VGG16 and structurally pruned VGG16 planned as float models on the 4x4 fp32 kernel (issue 12).

Next to the paper's fp32 rows (Table II: VGG16 552.28 ms, VGG16-HA 99.33 ms, VGG16-HCR
15.09 ms, all on a CPI = CPO = 4 fp32 accelerator, 224x224). For each network:

* the model: ``hlsinf.zoo``'s plain-torch VGG16 (seeded weights, 224x224, exported by
  torch), and two prunings of it by ``hlsinf.compress`` (layer-wise L1 pruning of every
  convolution, real channel removal) keeping the paper's share of neurons: 36.19 % (HA)
  and 11.64 % (HCR) of the conv channels (Table I(a), "neuronas restantes");
* ``to_fpga(model, KernelConfig.from_format("fp32", cpi=4, cpo=4))``: the float model as it
  is, no quantisation;
* MACs (Conv + Gemm) and the share the plan puts on the accelerator; ideal cycles
  (``CallArgs.ideal_cycles`` summed by the plan); efficiency ``MACs / (cycles x CPI x CPO x 9)``
  (the share of the 144 multipliers doing useful work in an ideal cycle: lanes of partly
  filled channel groups and the zero taps of smaller kernels are the loss);
* projected accelerator time ``(ideal + calls x A) / f``, A = 620 cycles per call (the
  largest fixed cost measured per whole layer at 4x4, docs/networks.md) at f = 250 MHz
  (and 200 / 300 MHz: see docs/performance.md, "fp32");
* the CPU layers measured: each onnxruntime partition of the plan run on the values the
  float model gives its inputs (best of ``--repeats``), and the layout transforms of the
  plan's transfers (numpy, NCHW <-> GIHWCPI float32);
* total = projected accelerator + CPU layers + transfers; onnxruntime float on the whole
  model for comparison.

With ``--run NAME`` a network also runs whole on the reference device (the bit-exact fp32
model, slow: about 60-90 M MACs/s) and is compared with onnxruntime float.

    PYTHONPATH=. python benchmarks/fp32_vgg16.py [--resolution 224] [--repeats 3] [--run vgg16_hcr]
                                                  [--json benchmarks/results/fp32_vgg16.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from hlsinf.config import KernelConfig                                  # noqa: E402
from hlsinf.host import ReferenceDevice, Session, onnxruntime_session, to_fpga  # noqa: E402
from hlsinf.host.plan import Transfer                                  # noqa: E402
from hlsinf.reference import pack_activations, unpack_activations      # noqa: E402

#: Fixed cost of one call over its ideal cycles (docs/networks.md: the largest measured per
#: whole layer, conv1_1 at 4x4 int8). The fp32 pipeline is deeper (FMul 6 + FDotTree(36) 36
#: + accumulation cycles instead of the int8 tree), a few tens of cycles more per call.
PER_CALL_CYCLES = 620
CLOCKS_MHZ = (200, 250, 300)
CLOCK_MHZ = 250

#: Table II of the paper (seeds/000_*), FPGA fp32 CPI = CPO = 4, 224x224, ms per image,
#: and Table I(a): share of neurons left by the pruning.
PAPER = {"vgg16": dict(ms=552.28, remaining=1.0, params_kib=524_583),
         "vgg16_ha": dict(ms=99.33, remaining=0.3619, params_kib=18_692),
         "vgg16_hcr": dict(ms=15.09, remaining=0.1164, params_kib=2_268)}
PAPER_CPU_MS = 1430.29

#: fp32 units alone (docs/numbers.md, Yosys): FMul 2 DSP48E2 / 476 LUT, FAdd 554 LUT.
FMUL_LUT, FMUL_DSP, FADD_LUT = 476, 2, 554
U200_LUT, U200_DSP = 1_182_240, 6_840


def macs_of(graph, layers) -> dict:
    """MACs of every Conv and Gemm of the graph, and of those inside accelerator layers."""
    on_acc = {n for layer in layers for n in layer.nodes}
    out = dict(conv=0, conv_acc=0, gemm=0, gemm_acc=0)
    for node in graph.nodes:
        if node.op == "Conv":
            w = graph.const(node.inputs[1])
            _, _, ho, wo = graph.shapes[node.outputs[0]]
            m = int(np.prod(w.shape)) * ho * wo
            out["conv"] += m
            out["conv_acc"] += m if node.name in on_acc else 0
        elif node.op in ("Gemm", "MatMul"):
            w = graph.const(node.inputs[1])
            m = int(np.prod(w.shape)) * int(np.prod(graph.shapes[node.inputs[0]][:-1]))
            out["gemm"] += m
    return out


def conv_channels(graph) -> int:
    return sum(graph.const(n.inputs[1]).shape[0] for n in graph.nodes if n.op == "Conv")


def resources(cfg: KernelConfig) -> dict:
    """The fp32 units of the kernel (hlsinf/gateware/stages/float_*.py) counted and priced by
    the units' Yosys figures: CPI*CPO*9 FMul and per output lane an FDotTree(CPI*9)
    (CPI*9 - 1 FAdd) in FloatMul; per lane the accumulation and bias FAdd in FloatAdd and
    2 FAdd + 1 FMul (pair, quad, x0.25) in FloatPool. An estimate of the float arithmetic
    only, not a synthesis of the kernel (the rest: control, memories, line buffers)."""
    fmul = cfg.cpi * cfg.cpo * 9 + cfg.cpo
    fadd = cfg.cpo * (cfg.cpi * 9 - 1) + 2 * cfg.cpo + 2 * cfg.cpo
    lut = fmul * FMUL_LUT + fadd * FADD_LUT
    return dict(fmul=fmul, fadd=fadd, dsp=fmul * FMUL_DSP, lut=lut, lut_share=lut / U200_LUT,
                dsp_share=fmul * FMUL_DSP / U200_DSP)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_host(model, plan, x, repeats: int) -> dict:
    """Seconds of each CPU partition (onnxruntime, fed with the float model's own values) and
    of each transfer's layout transform; the fastest of ``repeats`` each."""
    import onnx
    names = {t for part in plan.partitions for t in part.inputs}
    names |= {s.tensor for s in plan.steps if isinstance(s, Transfer)}
    names -= {plan.graph.inputs[0]}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    outs = [o.name for o in m.graph.output]
    for t in sorted(names):
        if t not in outs:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
            outs.append(t)
    sess = onnxruntime_session(m)
    values = dict(zip(outs, sess.run(outs, {sess.get_inputs()[0].name: x})))
    values[plan.graph.inputs[0]] = x
    values.update(plan.graph.initializers)
    cpu = {}
    for part in plan.partitions:
        s = part.session()
        feeds = {t: np.ascontiguousarray(values[t]) for t in part.inputs}
        s.run(list(part.outputs), feeds)                                  # warm-up
        cpu[part.name] = best_of(lambda: s.run(list(part.outputs), feeds), repeats)
    transfers = {}
    for step in plan.steps:
        if not isinstance(step, Transfer):
            continue
        img = np.asarray(values[step.tensor], np.float32)[0]
        c, h, w = step.shape
        if step.direction == "to_device":
            transfers[step.name] = best_of(lambda: pack_activations(img, step.lanes, np.float32), repeats)
        else:
            mem = pack_activations(img, step.lanes, np.float32)
            transfers[step.name] = best_of(lambda: unpack_activations(mem, c, h, w, step.lanes).copy(), repeats)
    return dict(cpu=cpu, transfers=transfers)


def network(name: str, model, cfg: KernelConfig, x: np.ndarray, repeats: int, run: bool) -> dict:
    t0 = time.perf_counter()
    plan = to_fpga(model, cfg)
    plan_s = time.perf_counter() - t0
    layers = plan.fpga_layers
    macs = macs_of(plan.graph, layers)
    ideal = plan.ideal_cycles()
    calls = sum(len(layer.calls) for layer in layers)
    projected = ideal + calls * PER_CALL_CYCLES
    host = measure_host(model, plan, x, repeats)
    cpu_s, transfer_s = sum(host["cpu"].values()), sum(host["transfers"].values())
    sess = onnxruntime_session(model)
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    ort_s = best_of(lambda: sess.run(None, feed), repeats)
    params = sum(int(np.prod(v.shape)) for v in plan.graph.initializers.values())
    r = dict(name=name, conv_layers=sum(1 for n in plan.graph.nodes if n.op == "Conv"),
             accelerator_layers=len(layers), calls=calls, conv_channels=conv_channels(plan.graph),
             params=params, params_kib=params * 4 / 1024, macs=macs,
             mac_share=(macs["conv_acc"] + macs["gemm_acc"]) / (macs["conv"] + macs["gemm"]),
             conv_mac_share=macs["conv_acc"] / max(macs["conv"], 1),
             ideal_cycles=ideal, projected_cycles=projected,
             efficiency=macs["conv_acc"] / (ideal * cfg.cpi * cfg.cpo * 9),
             accelerator_ms={f: projected / (f * 1e3) for f in CLOCKS_MHZ},
             ideal_ms={f: ideal / (f * 1e3) for f in CLOCKS_MHZ},
             cpu_ms=cpu_s * 1e3, transfer_ms=transfer_s * 1e3, host=host,
             total_ms={f: projected / (f * 1e3) + (cpu_s + transfer_s) * 1e3 for f in CLOCKS_MHZ},
             onnxruntime_ms=ort_s * 1e3, plan_s=plan_s,
             per_layer=[dict(name=layer.name, shape=f"{layer.in_shape} -> {layer.out_shape}",
                             calls=len(layer.calls), ideal=layer.ideal_cycles(cfg)) for layer in layers],
             paper=PAPER.get(name))
    if run:
        t0 = time.perf_counter()
        got = Session(plan, ReferenceDevice(cfg)).run(x)
        r["reference_run_s"] = time.perf_counter() - t0
        want = sess.run(None, feed)[0]
        y = got[plan.graph.outputs[0]]
        r["reference_vs_onnxruntime"] = dict(
            max_abs=float(np.abs(y - want).max()), max_ref=float(np.abs(want).max()),
            max_rel_to_largest=float(np.abs(y - want).max() / np.abs(want).max()),
            top1_equal=bool(np.array_equal(y.argmax(1), want.argmax(1))))
    return r


def table(results: list[dict], cfg: KernelConfig, resolution: int = 224) -> str:
    f = CLOCK_MHZ
    lines = [f"| network ({resolution}x{resolution} float, fp32 {cfg.cpi}x{cfg.cpo}) | conv channels | params | MACs | on accelerator "
             f"(conv) | calls | ideal Mcycles | efficiency | accelerator ms at {f} MHz (200 / 300) | CPU layers ms "
             f"| transfers ms | **total ms** | paper fp32 ms | onnxruntime float ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        m = r["macs"]
        lines.append(
            f"| {r['name']} | {r['conv_channels']:,} | {r['params'] / 1e6:.2f} M | {(m['conv'] + m['gemm']) / 1e9:.3f} G "
            f"| {100 * r['mac_share']:.2f} % ({100 * r['conv_mac_share']:.0f} %) | {r['calls']} "
            f"| {r['ideal_cycles'] / 1e6:.2f} | {r['efficiency']:.4f} "
            f"| {r['accelerator_ms'][f]:.2f} ({r['accelerator_ms'][200]:.2f} / {r['accelerator_ms'][300]:.2f}) "
            f"| {r['cpu_ms']:.2f} | {r['transfer_ms']:.2f} | **{r['total_ms'][f]:.2f}** "
            f"| {r['paper']['ms'] if r['paper'] else '-'} | {r['onnxruntime_ms']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run", nargs="*", default=[], help="networks to run whole on the reference device")
    p.add_argument("--json", default="benchmarks/results/fp32_vgg16.json")
    args = p.parse_args(argv)
    from hlsinf import zoo
    from hlsinf.compress import compress
    cfg = KernelConfig.from_format("fp32", cpi=4, cpo=4)
    x = zoo.calibration("vgg16", 1, seed=7, resolution=args.resolution)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        import onnx
        path = zoo.export("vgg16", resolution=args.resolution, path=Path(tmp) / "vgg16.onnx")
        dense = onnx.load(path)
        models = {"vgg16": (dense, None)}
        for name in ("vgg16_ha", "vgg16_hcr"):
            amount = 1 - PAPER[name]["remaining"]
            t0 = time.perf_counter()
            pruned, report = compress(dense, amount=amount, scope="layer", criterion="l1")
            models[name] = (pruned, dict(amount=amount, seconds=time.perf_counter() - t0,
                                         channels_before=report.removal.channels_before,
                                         channels_after=report.removal.channels_after,
                                         per_layer=[(layer.name, layer.channels_before, layer.channels_after)
                                                    for layer in report.removal.layers]))
        for name, (model, pruning) in models.items():
            r = network(name, model, cfg, x, args.repeats, name in args.run)
            r["pruning"] = pruning
            results.append(r)
            print(f"{name}: {r['ideal_cycles']:,} ideal cycles, {r['calls']} calls, accelerator "
                  f"{r['accelerator_ms'][CLOCK_MHZ]:.2f} ms, CPU {r['cpu_ms']:.2f} ms, transfers "
                  f"{r['transfer_ms']:.2f} ms", file=sys.stderr)
    res = resources(cfg)
    out = dict(config=cfg.to_dict(), resolution=args.resolution, clock_mhz=CLOCK_MHZ, per_call_cycles=PER_CALL_CYCLES,
               resources_estimate=res, paper_cpu_ms=PAPER_CPU_MS, networks=results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    print(table(results, cfg, args.resolution))
    print()
    print(f"fp32 MAC array estimate ({cfg.cpi}x{cfg.cpo}): {res['fmul']} FMul + {res['fadd']} FAdd = "
          f"{res['dsp']} DSP48E2 ({100 * res['dsp_share']:.1f} % of the U200), {res['lut']:,} LUT "
          f"({100 * res['lut_share']:.1f} %), from the units' Yosys figures (docs/numbers.md)")
    for r in results:
        if r.get("pruning"):
            pr = r["pruning"]
            print(f"{r['name']}: pruned {100 * pr['amount']:.2f} % per conv layer, channels "
                  f"{pr['channels_before']} -> {pr['channels_after']} ({100 * pr['channels_after'] / pr['channels_before']:.2f} %)")
        if "reference_vs_onnxruntime" in r:
            c = r["reference_vs_onnxruntime"]
            print(f"{r['name']} on the reference device: {r['reference_run_s']:.1f} s, max |diff| to onnxruntime "
                  f"{c['max_abs']:.3g} ({c['max_rel_to_largest']:.2g} of the largest output), same top-1: {c['top1_equal']}")
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
