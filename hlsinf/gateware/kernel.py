"""The kernel top level: the dataflow stages, the AXI masters and the control slave under
the port names Vitis expects of an RTL kernel.

Vitis finds a kernel's interfaces by port name (``ap_clk``, ``ap_rst_n``, ``interrupt``,
``s_axi_control_*``, ``m_axi_<bundle>_*``), so the top level's signature is flat: every
leaf of the AXI signatures becomes one member named ``<prefix>_<leaf>``, and
:func:`connect_flat` wires those members to the nested interfaces of the sub-components.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hlsinf.gateware.memory.axi import DATA_WIDTH, AXI4LiteSignature, AXI4Signature, ReadArbiter
from hlsinf.config import KernelConfig
from hlsinf.gateware.control import Control, control_addr_width
from hlsinf.gateware.export import to_verilog
from hlsinf.gateware.stages.add import Add
from hlsinf.gateware.stages.cvt import Cvt
from hlsinf.gateware.stages.input_cache import InputCache
from hlsinf.gateware.stages.leaky_relu import LeakyRelu
from hlsinf.gateware.stages.batch_norm import BatchNorm
from hlsinf.gateware.stages.residual_add import ResidualAdd
from hlsinf.gateware.stages.table import Table
from hlsinf.gateware.stages.mul import Mul
from hlsinf.gateware.stages.padding import Padding
from hlsinf.gateware.stages.pool import Pool
from hlsinf.gateware.stages.pointwise import PointwiseMux
from hlsinf.gateware.memory.read import ActivationReader, ItemReader
from hlsinf.gateware.stages.relu import Relu
from hlsinf.gateware.stages.upsize import Upsize
from hlsinf.gateware.memory.weights import ParameterLoader
from hlsinf.gateware.stages.window import Window
from hlsinf.gateware.memory.write import PixelWriter
from hlsinf.gateware.lib.streams import pixel_layout
from hlsinf.registers import POINTERS, STATUS_BITS, STATUS_RESP_SHIFT
from hlsinf.gateware.sequencer import Sequencer

__all__ = ["Kernel", "kernel_verilog", "TOP_NAME", "BUNDLES", "DEFAULT_INPUT_CACHE_PIXELS",
           "flat_members", "connect_flat", "connect_params", "vitis_clock_domain", "POST_OP_STAGES",
           "stage_classes"]

#: The stage of each post-operation (``KernelConfig.post_ops``); its ``params`` are named
#: after the call's registers (``hlsinf.registers.POST_OP_SCALARS``).
POST_OP_STAGES = {"leaky_relu": LeakyRelu, "bn": BatchNorm, "residual_add": ResidualAdd, "table": Table}

#: The residual operand's reader on ``gmem_in`` (post-op ``residual_add``): bursts in flight
#: and receive FIFO beats. It needs CPO bytes per output pixel at most, so a few bursts of
#: read-ahead cover the memory latency (docs/memory.md).
RESIDUAL_READER = {"max_outstanding": 4, "fifo_beats": 256}

#: Module name of the generated Verilog (the RTL kernel's name in Vitis).
TOP_NAME = "hlsinf_kernel"
#: Pixels (of CPI lanes) of the on-chip input cache unless ``Kernel`` is told otherwise:
#: 1 Mibit at CPI = 8 (about 30 of the U200's 2,160 BRAM36).
DEFAULT_INPUT_CACHE_PIXELS = 16384
#: AXI4 master bundles, in the order the pointer arguments first name them.
BUNDLES = tuple(dict.fromkeys(bundle for _name, bundle, _doc in POINTERS))


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


def connect_params(m: Module, sink, source, **renamed) -> None:
    """Drive every field of ``sink`` (a stage's ``params``) from the field of the same name
    of ``source`` (the sequencer's ``geometry``), or from ``renamed[field]`` where the stage
    names it otherwise (e.g. pool's ``rows`` are the call's ``conv_rows``).

    A field of ``sink`` that ``source`` lacks, or a rename of a field ``sink`` does not
    have, is an error at elaboration. Values are assigned with ``.eq``: a source field
    wider than the stage's is truncated (the call's arguments are validated to fit).
    """
    fields = [name for name, _ in sink.shape()]
    unknown = sorted(set(renamed) - set(fields))
    if unknown:
        raise ValueError(f"connect_params: {', '.join(unknown)} not among the parameters {fields}")
    missing = [name for name in fields if name not in renamed and name not in source.shape().members]
    if missing:
        raise ValueError(f"connect_params: parameter(s) {', '.join(map(repr, missing))} have no field of "
                         f"that name in the source; name their values (connect_params(..., name=value))")
    for name in fields:
        m.d.comb += getattr(sink, name).eq(renamed[name] if name in renamed else getattr(source, name))


def unsupported_features(cfg: KernelConfig) -> str:
    """The configured features the gateware cannot build (yet), in words; empty if none."""
    missing = []
    return ", ".join(missing)


def stage_classes(cfg: KernelConfig) -> dict:
    """The stage class of each role (``mul``, ``add``, ``relu``, ``pool`` and the post-ops
    of :data:`POST_OP_STAGES`) for ``cfg``'s number format: the integer stages, or the
    binary32 ones of an fp32 ``cfg`` (imported here, so that an integer build needs none of them)."""
    if not cfg.is_float:
        return dict(mul=Mul, add=Add, relu=Relu, pool=Pool, **POST_OP_STAGES)
    from hlsinf.gateware.stages.float_add import FloatAdd
    from hlsinf.gateware.stages.float_mul import FloatMul
    from hlsinf.gateware.stages.float_pool import FloatPool
    from hlsinf.gateware.stages.float_relu import FloatRelu
    classes = dict(mul=FloatMul, add=FloatAdd, relu=FloatRelu, pool=FloatPool)
    if cfg.post_ops:
        from hlsinf.gateware.stages.float_post import FloatBatchNorm, FloatLeakyRelu
        classes.update(leaky_relu=FloatLeakyRelu, bn=FloatBatchNorm)
    return classes


class Kernel(wiring.Component):
    """The RTL kernel: control slave, call sequencer, three AXI4 masters and the dataflow stages.

    ::

        s_axi_control -> Control -> Sequencer -- in_cmd --> ActivationReader (gmem_in)
                                       |                         |
                                       |                    InputCache
                                       |-- w_cmd --> ParameterLoader (gmem_w)
                                       |              | weights  | bias  | mult
                                       |   pixels -> window -> mul -> add -> relu -> [post-ops] -> pool
                                       '-- out_cmd ----------------------------------------> PixelWriter (gmem_out)

    With post-op ``residual_add`` the sequencer's ``r_cmd`` drives a second reader of
    CPO-lane pixels that shares ``gmem_in`` with the input reader (``ReadArbiter``), and
    its pixels are the residual stage's operand (docs/memory.md).

    An fp32 ``cfg`` builds the binary32 stages in the same places (:func:`stage_classes`):
    lanes are 32 bits wide everywhere (a CPI = 4 pixel is 128 bits), the bias words are
    binary32, and there is no multiplier stream (``with_multiplier`` is False).

    The ports are flat, with the names Vitis expects: ``ap_clk``, ``ap_rst_n``, ``interrupt``,
    ``s_axi_control_<member>`` and ``m_axi_<bundle>_<member>`` for the bundles of
    :data:`BUNDLES`; everything runs in one domain clocked by ``ap_clk``.

    Parameters
    ----------
    cfg : KernelConfig
    input_cache_pixels : int
        Capacity of the on-chip input cache in pixels of CPI lanes (0: none). A call whose
        tile (``ceil(I/CPI) * rows * W`` pixels) fits is read from memory once and replayed
        for its other output groups; a larger tile is read again for every output group,
        which costs memory bandwidth (64 bytes a beat against CPI a cycle), not cycles.
    param_depth : int
        Weight sets (and bias, multiplier items) assembled ahead of the stages that use them.
    window_stage : bool
        True: 3x3 windows by :class:`~hlsinf.gateware.stages.window.Window`, which substitutes the
        padding's zeros without spending cycles on them. False: ``padding -> cvt``, which
        streams every padded pixel (``(rows+pt+pb)*(W+pl+pr)`` cycles a frame).
    data_width : int
        Width of the AXI4 data buses.
    """

    def __init__(self, cfg: KernelConfig, *, input_cache_pixels: int = DEFAULT_INPUT_CACHE_PIXELS,
                 param_depth: int = 2, data_width: int = DATA_WIDTH, window_stage: bool = True):
        if not isinstance(cfg, KernelConfig):
            raise TypeError(f"Kernel(cfg): cfg must be a KernelConfig, not {type(cfg).__name__}")
        unsupported = unsupported_features(cfg)
        if unsupported:
            raise ValueError(f"Kernel(cfg): this kernel generator does not build {unsupported} yet")
        if not (isinstance(input_cache_pixels, int) and input_cache_pixels >= 0):
            raise ValueError(f"Kernel input_cache_pixels = {input_cache_pixels!r} is out of range: allowed >= 0")
        self.cfg, self.param_depth, self.data_width = cfg, param_depth, data_width
        self.input_cache_pixels = input_cache_pixels
        self.window_stage = bool(window_stage)
        members = {"ap_clk": In(1), "ap_rst_n": In(1), "interrupt": Out(1)}
        members.update(flat_members("s_axi_control", AXI4LiteSignature(addr_width=control_addr_width(cfg)).flip()))
        for bundle in BUNDLES:
            members.update(flat_members(f"m_axi_{bundle}", AXI4Signature(data_width=data_width)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        vitis_clock_domain(m, self.ap_clk, self.ap_rst_n)

        m.submodules.control = control = Control(cfg)
        m.submodules.sequencer = seq = Sequencer(cfg, cache_pixels=self.input_cache_pixels)
        m.submodules.reader = reader = ActivationReader(cfg, data_width=self.data_width)
        m.submodules.loader = loader = ParameterLoader(cfg, depth=self.param_depth, data_width=self.data_width)
        m.submodules.writer = writer = PixelWriter(cfg, data_width=self.data_width)
        stages = stage_classes(cfg)
        m.submodules.mul = mul = stages["mul"](cfg)
        m.submodules.add = add = stages["add"](cfg)
        m.submodules.relu = relu = stages["relu"](cfg)
        m.submodules.pool = pool = stages["pool"](cfg)

        # Host side: control registers in, interrupt out.
        connect_flat(m, self, "s_axi_control", control.s_axi_control)
        m.d.comb += self.interrupt.eq(control.interrupt)
        m.d.comb += seq.args.eq(control.args)     # one layout: hlsinf.gateware.control.args_layout
        m.d.comb += [seq.start.eq(control.start), control.done.eq(seq.done)]

        # Memory side: one master per bundle. The residual operand (post-op residual_add) has
        # a read engine of its own that shares gmem_in with the input reader.
        if "residual_add" in cfg.post_ops:
            m.submodules.residual_reader = r_reader = ItemReader(pixel_layout(cfg, cfg.cpo),
                                                                 data_width=self.data_width, **RESIDUAL_READER)
            m.submodules.gmem_in_arbiter = arbiter = ReadArbiter(2, data_width=self.data_width)
            wiring.connect(m, reader.axi, arbiter.inputs[0])
            wiring.connect(m, r_reader.axi, arbiter.inputs[1])
            connect_flat(m, self, "m_axi_gmem_in", arbiter.axi)
            wiring.connect(m, seq.r_cmd, r_reader.cmd)
            m.d.comb += r_reader.clear.eq(control.start)
            in_error = reader.error | r_reader.error
            in_resp = Mux(reader.error, reader.resp, r_reader.resp)
        else:
            connect_flat(m, self, "m_axi_gmem_in", reader.axi)
            in_error, in_resp = reader.error, reader.resp
        connect_flat(m, self, "m_axi_gmem_w", loader.axi)
        connect_flat(m, self, "m_axi_gmem_out", writer.axi)
        wiring.connect(m, seq.in_cmd, reader.cmd)
        wiring.connect(m, seq.w_cmd, loader.cmd)
        wiring.connect(m, seq.out_cmd, writer.cmd)
        if cfg.with_acc_split:      # an acc_hold call's groups end when the add stage has held them
            m.d.comb += seq.out_ack.eq(writer.done | add.held)
        else:
            m.d.comb += seq.out_ack.eq(writer.done)
        # AXI error responses: flags and first response per bundle in the status register,
        # cleared when a call starts (the call itself runs to its end: docs/kernel.md).
        for bundle, master, error, resp in (("gmem_in", reader, in_error, in_resp),
                                            ("gmem_w", loader, loader.error, loader.resp),
                                            ("gmem_out", writer, writer.error, writer.resp)):
            shift = STATUS_RESP_SHIFT[bundle]
            m.d.comb += [control.status[STATUS_BITS[bundle]].eq(error),
                         control.status[shift:shift + 2].eq(resp), master.clear.eq(control.start)]

        # Stage parameters: the fields of the call geometry of the same name, except where a
        # stage sees the frame differently from the call (named here).
        g = seq.geometry
        connect_params(m, mul.params, g)
        connect_params(m, add.params, g)
        connect_params(m, relu.params, g)
        connect_params(m, pool.params, g, rows=g.conv_rows, cols=g.conv_cols, mode=g.pool)
        if cfg.with_depthwise:      # depthwise calls: the loader puts their weights on the diagonal
            m.d.comb += loader.depthwise.eq(g.depthwise)

        # The dataflow chain: pixels (through the input cache), windows, then the MAC array.
        pixels = reader.o
        if self.input_cache_pixels:
            m.submodules.input_cache = cache = InputCache(cfg, self.input_cache_pixels)
            connect_params(m, cache.params, g, enable=g.cached)
            wiring.connect(m, pixels, cache.i)
            pixels = cache.o
        parts = {}
        if self.window_stage:
            m.submodules.window = window = Window(cfg)
            connect_params(m, window.params, g)
            first, windows = window.i, window.o
            parts["window"] = window
        else:
            m.submodules.padding = padding = Padding(cfg)
            m.submodules.cvt = cvt = Cvt(cfg)
            connect_params(m, padding.params, g)
            connect_params(m, cvt.params, g, rows=g.padded_rows, cols=g.padded_cols)
            wiring.connect(m, padding.o, cvt.i)
            first, windows = padding.i, cvt.o
            parts.update(padding=padding, cvt=cvt)
        wiring.connect(m, pixels, first)
        # done waits for the call's last input pixel too (a row no window uses may trail).
        taken = first.valid & first.ready
        if cfg.with_pointwise:
            # Pointwise calls: super-pixels from the reader straight to mul, as windows.
            m.submodules.pointwise_mux = pw_mux = PointwiseMux(cfg)
            m.d.comb += [reader.pointwise.eq(g.pointwise), pw_mux.pointwise.eq(g.pointwise)]
            wiring.connect(m, windows, pw_mux.windows)
            wiring.connect(m, reader.superpixels, pw_mux.superpixels)
            taken = taken | (pw_mux.superpixels.valid & pw_mux.superpixels.ready)
            windows = pw_mux.o
            parts["pointwise_mux"] = pw_mux
        m.d.comb += seq.in_taken.eq(taken)
        wiring.connect(m, windows, mul.i)
        wiring.connect(m, loader.weights, mul.weights)
        wiring.connect(m, mul.o, add.i)
        wiring.connect(m, loader.bias, add.bias)
        wiring.connect(m, add.o, relu.i)
        if hasattr(relu, "mult"):
            wiring.connect(m, loader.mult, relu.mult)
        else:
            m.d.comb += loader.mult.ready.eq(0)   # no multiplier built: use_mult is rejected
        # Post-operations, in the configured order, between relu and pool. Their parameters
        # are registers of their own, latched by the control slave for the whole call.
        activations = relu.o
        post = {}
        for name in cfg.post_ops:
            stage = stages[name](cfg)
            m.submodules[name] = post[name] = stage
            # Fields the stage takes from the call geometry (frame_pixels), the rest from its registers.
            connect_params(m, stage.params, control.args,
                           **{field: getattr(g, field) for field in getattr(stage, "GEOMETRY_PARAMS", ())})
            if name == "bn":
                wiring.connect(m, loader.bn, stage.item)
            if name == "residual_add":
                wiring.connect(m, r_reader.o, stage.operand)
            if name == "table":     # the call's table, loaded once after each start
                wiring.connect(m, loader.table, stage.entries)
                m.d.comb += stage.start.eq(control.start)
            wiring.connect(m, activations, stage.i)
            activations = stage.o
        wiring.connect(m, activations, pool.i)
        pooled = pool.o
        if cfg.max_upsize > 1:
            # Nearest upsampling of the pooled frame: the writer's lengths are already f*f larger.
            m.submodules.upsize = upsize = Upsize(cfg)
            connect_params(m, upsize.params, g, cols=Mux(g.pool != 0, g.conv_cols >> 1, g.conv_cols),
                           factor_log=g.upsize_log)
            wiring.connect(m, pooled, upsize.i)
            pooled = upsize.o
            post["upsize"] = upsize
        wiring.connect(m, pooled, writer.i)

        #: The sub-components of the last elaboration, by name (for simulation probes).
        self.parts = dict(control=control, sequencer=seq, reader=reader, loader=loader, writer=writer,
                          mul=mul, add=add, relu=relu, pool=pool, **parts, **post)
        return m


def kernel_verilog(cfg: KernelConfig, *, name: str = TOP_NAME, **kwargs) -> str:
    """Verilog of ``Kernel(cfg)`` with top module ``name``; ``kwargs`` go to :class:`Kernel`."""
    return to_verilog(Kernel(cfg, **kwargs), name=name)
