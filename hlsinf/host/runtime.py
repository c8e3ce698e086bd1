"""Execute a :class:`~hlsinf.host.plan.Plan` on a device, and profile where the time goes.

A :class:`Session` loads a plan onto a device once (weights, bias and multipliers copied
in, activation buffers allocated, one onnxruntime session per CPU partition), then runs any
number of inputs. Time is split the way
the paper's Fig. 4/5 does: accelerator calls, CPU layers and transfers (layout transform
plus copy across the boundary).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from hlsinf.reference import act_dtype, bias_dtype, mult_dtype, pack_activations, unpack_activations, weight_dtype
from hlsinf.host.device import Device, ReferenceDevice
from hlsinf.ir import GraphError
from hlsinf.host.plan import CpuLayer, Plan, Transfer

__all__ = ["Session", "Profile", "run"]


@dataclass
class Profile:
    """Seconds per step and per category, and cycles of accelerator layers."""

    seconds: dict[str, float] = field(default_factory=dict)       #: step name -> seconds
    category: dict[str, str] = field(default_factory=dict)        #: step name -> accelerator/cpu/transfer
    cycles: dict[str, int] = field(default_factory=dict)          #: layer -> measured cycles, all runs (devices that count)
    ideal: dict[str, int] = field(default_factory=dict)           #: layer -> ideal cycles of one run
    runs: dict[str, int] = field(default_factory=dict)            #: layer -> times it ran (images)

    def cycles_per_run(self) -> dict[str, float]:
        """Measured cycles of one inference per layer (averaged over the images of the batch)."""
        return {k: v / self.runs.get(k, 1) for k, v in self.cycles.items()}

    def add(self, name: str, category: str, seconds: float):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.category[name] = category

    def totals(self) -> dict[str, float]:
        out = {"accelerator": 0.0, "cpu": 0.0, "transfer": 0.0}
        for name, s in self.seconds.items():
            out[self.category[name]] += s
        return out

    def report(self) -> str:
        t = self.totals()
        total = sum(t.values()) or 1e-12
        lines = ["time split: " + ", ".join(f"{k} {v * 1e3:.1f} ms ({100 * v / total:.0f}%)" for k, v in t.items())]
        top = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:10]
        lines.append("slowest steps: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in top))
        return "\n".join(lines)

    def plot(self, path: str) -> bool:
        """Bar chart of time per step coloured by category (matplotlib); False if it is not installed."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        names = list(self.seconds)
        colours = {"accelerator": "tab:red", "cpu": "tab:blue", "transfer": "tab:gray"}
        fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.25), 4))
        ax.bar(range(len(names)), [self.seconds[n] * 1e3 for n in names],
               color=[colours[self.category[n]] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_ylabel("ms")
        for k, c in colours.items():
            ax.bar([0], [0], color=c, label=k)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return True


class _LineProgress:
    """Minimal stand-in for tqdm: one rewritten line on stderr."""

    def __init__(self, total: int, name: str):
        self.total, self.name, self.n = total, name, 0

    def update(self, k: int):
        import sys
        self.n += k
        print(f"\r{self.name}: step {self.n}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self):
        import sys
        print(file=sys.stderr)


class Session:
    """A plan loaded on a device: parameters copied in once, buffers allocated once."""

    def __init__(self, plan: Plan, device: Device | None = None):
        self.plan = plan
        cfg = plan.cfg
        #: (partition index, extra outputs) -> onnxruntime session of that CPU partition
        self.cpu_sessions = {(k, ()): part.session() for k, part in enumerate(plan.partitions)}
        self.device = device if device is not None else ReferenceDevice(cfg)
        if self.device.cfg != cfg:
            raise ValueError(f"the device runs a kernel configured as {self.device.cfg}, the plan is for {cfg}")
        dev = self.device
        self.act = np.dtype(act_dtype(cfg))
        self.buffers: dict[tuple[str, int], int] = {}
        for (t, lanes), (c, h, w) in plan.device_tensors.items():
            self.buffers[(t, lanes)] = dev.allocate(math.ceil(c / lanes) * lanes * h * w * self.act.itemsize,
                                                    f"{t}@{lanes}")
        self.params: dict[str, dict[str, int]] = {}
        for layer in plan.fpga_layers:
            p = {}
            for arg, arr, dt in (("w", layer.weights, weight_dtype(cfg)), ("b", layer.bias, bias_dtype(cfg)),
                                 ("m", layer.mult, mult_dtype(cfg))):
                data = np.asarray(arr, dt)
                p[arg] = dev.allocate(data.nbytes, f"{layer.name}.{arg}")
                dev.write(p[arg], data)
            if layer.table is not None:      # the fused activation's post-op table
                p["t"] = dev.allocate(layer.table.nbytes, f"{layer.name}.t")
                dev.write(p["t"], layer.table)
            self.params[layer.name] = p
            if layer.columns:          # strip buffers of the widest column tile
                c, h, _ = layer.in_shape
                o, ho, _ = layer.out_shape
                wi = max(t.in_stop - t.in_start for t in layer.columns)
                wo = max(t.out_stop - t.out_start for t in layer.columns)
                size_in = math.ceil(c / cfg.cpi) * cfg.cpi * h * wi * self.act.itemsize
                size_out = math.ceil(o / cfg.cpo) * cfg.cpo * ho * wo * self.act.itemsize
                p["strip_x"] = dev.allocate(size_in, f"{layer.name}.strip_x")
                p["strip_y"] = dev.allocate(size_out, f"{layer.name}.strip_y")

    def run(self, x: np.ndarray, fetch=(), profile: Profile | None = None, progress: bool = False) -> dict:
        """Run one input batch; returns ``{output name: array}`` plus any ``fetch`` tensors.

        The plan is for a batch of one; a larger batch runs image by image.
        """
        graph = self.plan.graph
        name = graph.inputs[0]
        expected = graph.shapes[name]
        x = np.asarray(x)
        if x.ndim != len(expected) or tuple(x.shape[1:]) != tuple(expected[1:]):
            raise GraphError(f"input {name!r} has shape {tuple(x.shape)}; the plan expects "
                             f"(N, {', '.join(map(str, expected[1:]))})")
        want_dtype = graph.dtypes.get(name, np.dtype(np.float32))
        x = x.astype(want_dtype, copy=False)
        results = [self._run_one(x[k:k + 1], fetch, profile, progress) for k in range(x.shape[0])]
        return {k: np.concatenate([r[k] for r in results], axis=0) for k in results[0]}

    def _run_columns(self, layer, ptrs, profile) -> int:
        """A layer wider than wmax: copy each column strip (with halo) into the strip buffer,
        run its calls, and put its output strip in place. The copies count as transfers."""
        dev, cfg, p = self.device, self.plan.cfg, self.params[layer.name]
        c, h, w = layer.in_shape
        o, ho, wo = layer.out_shape
        gi, go = math.ceil(c / cfg.cpi), math.ceil(o / cfg.cpo)
        copy_time, measured = 0.0, 0
        t0 = time.perf_counter()
        image = dev.read(ptrs["x"], self.act, gi * h * w * cfg.cpi).reshape(gi, h, w, cfg.cpi)
        out = np.zeros((go, ho, wo, cfg.cpo), self.act)
        copy_time += time.perf_counter() - t0
        strip_ptrs = dict(ptrs, x=p["strip_x"], y=p["strip_y"])
        calls = iter(layer.calls)
        for tile in layer.columns:
            t0 = time.perf_counter()
            dev.write(p["strip_x"], np.ascontiguousarray(image[:, :, tile.in_start:tile.in_stop]))
            copy_time += time.perf_counter() - t0
            for _ in range(tile.calls):
                measured += dev.call(next(calls), strip_ptrs) or 0
            t0 = time.perf_counter()
            tw = tile.out_stop - tile.out_start
            out[:, :, tile.out_start:tile.out_stop] = dev.read(p["strip_y"], self.act, go * ho * tw * cfg.cpo
                                                               ).reshape(go, ho, tw, cfg.cpo)
            copy_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        dev.write(ptrs["y"], out)
        copy_time += time.perf_counter() - t0
        if profile is not None:
            profile.add(f"{layer.name}:column strips", "transfer", copy_time)
            profile.seconds[layer.name] = profile.seconds.get(layer.name, 0.0) - copy_time
        return measured

    def _run_partition(self, k: int, values: dict, fetch) -> None:
        part = self.plan.partitions[k]
        inside = part.internal()
        extra = tuple(t for t in dict.fromkeys(fetch) if t in inside and t not in part.outputs)
        if (k, extra) not in self.cpu_sessions:
            self.cpu_sessions[(k, extra)] = part.session(extra)
        names = list(part.outputs) + list(extra)
        feeds = {t: np.ascontiguousarray(values[t]) for t in part.inputs}
        try:
            outs = self.cpu_sessions[(k, extra)].run(names, feeds)
        except Exception as e:          # onnxruntime's own exception types
            raise GraphError(f"CPU partition {part.name!r} failed in onnxruntime: {str(e).strip()}") from None
        values.update(zip(names, outs))

    def _run_one(self, x, fetch, profile, progress):
        plan, dev, cfg = self.plan, self.device, self.plan.cfg
        graph = plan.graph
        values = dict(graph.initializers)
        values[graph.inputs[0]] = x
        steps = plan.steps
        done: set[int] = set()
        bar = None
        if progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=len(steps), desc=graph.name, unit="step", leave=False)
            except ImportError:      # plain progress line on stderr
                bar = _LineProgress(len(steps), graph.name)
        for k, step in enumerate(steps):
            t0 = time.perf_counter()
            if isinstance(step, CpuLayer):
                # the first step of a partition runs all of it (the partition's steps are consecutive)
                if step.partition not in done:
                    done.add(step.partition)
                    self._run_partition(step.partition, values, fetch)
                    if profile is not None:
                        profile.add(plan.partitions[step.partition].name, "cpu", time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                continue
            elif isinstance(step, Transfer):
                c, h, w = step.shape
                addr = self.buffers[(step.buffer, step.lanes)]
                if step.direction == "to_device":      # model integers -> device values (offset, padding)
                    img = np.asarray(values[step.tensor])[0]
                    if img.ndim == 1:                  # a 1 x K row (Gemm, MatMul): a 1x1 image of K channels
                        img = img.reshape(-1, 1, 1)
                    img = step.device_image(img, self.act)
                    dev.write(addr, pack_activations(img, step.lanes, self.act))
                else:
                    g = math.ceil(c / step.lanes)
                    mem = dev.read(addr, self.act, g * step.lanes * h * w)
                    values[step.tensor] = step.host_image(unpack_activations(mem, c, h, w, step.lanes))[None]
                    if len(plan.graph.shapes.get(step.tensor, ())) == 2:    # a Gemm/MatMul row: 1 x O
                        values[step.tensor] = values[step.tensor].reshape(1, -1)
                category = "transfer"
            else:
                p = self.params[step.name]
                ptrs = {"x": self.buffers[(step.input, step.in_lanes(cfg))], "y": self.buffers[(step.output, cfg.cpo)],
                        "w": p["w"], "b": p["b"], "m": p["m"], **({"t": p["t"]} if "t" in p else {})}
                if step.residual:          # post-op residual_add: the operand, an earlier layer's output
                    ptrs["r"] = self.buffers[(step.residual, cfg.cpo)]
                if step.columns:
                    measured = self._run_columns(step, ptrs, profile)
                else:
                    measured = sum(dev.call(args, step.call_pointers(k, ptrs)) or 0
                                   for k, args in enumerate(step.calls))
                if profile is not None:
                    profile.ideal[step.name] = step.ideal_cycles(cfg)
                    profile.runs[step.name] = profile.runs.get(step.name, 0) + 1
                    if dev.measures_cycles:
                        profile.cycles[step.name] = profile.cycles.get(step.name, 0) + measured
                category = "accelerator"
            if profile is not None:
                profile.add(step.name, category, time.perf_counter() - t0)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        out = {}
        for name in list(graph.outputs) + list(fetch):
            if name in values:
                out[name] = values[name]
            elif (name, cfg.cpo) in self.buffers:         # a device-resident intermediate
                lanes = cfg.cpo
                c, h, w = plan.device_tensors[(name, lanes)]
                mem = dev.read(self.buffers[(name, lanes)], self.act, math.ceil(c / lanes) * lanes * h * w)
                out[name] = plan.host_value(name, unpack_activations(mem, c, h, w, lanes))[None]
                if len(graph.shapes.get(name, ())) == 2:      # a Gemm/MatMul row: 1 x O
                    out[name] = out[name].reshape(1, -1)
            else:
                raise GraphError(f"tensor {name!r} is not computed by this plan "
                                 "(fused inside an accelerator layer or unused)")
        return out


def run(plan: Plan, x: np.ndarray, device: Device | None = None, **kwargs) -> dict:
    """One-shot convenience: ``Session(plan, device).run(x, ...)``."""
    return Session(plan, device).run(x, **kwargs)
