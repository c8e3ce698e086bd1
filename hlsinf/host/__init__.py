"""Host runtime: ONNX import, quantisation, planning onto the kernel, execution on a device.

Typical use::

    from hlsinf.config import KernelConfig
    from hlsinf.host import quantize, to_fpga, Session

    cfg = KernelConfig(cpi=4, cpo=4)
    plan = to_fpga("model_qdq.onnx", cfg)            # or to_fpga(float_model, cfg, calibration=batch)
    print(plan.summary())
    y = Session(plan).run(x)                          # reference device by default

See docs/host.md.
"""

from hlsinf.host.load import load_model
from hlsinf.ir import Graph, GraphError, Node
from hlsinf.host.ort import onnxruntime_session
from hlsinf.host.quantize import QuantError, quantize, requant_params
from hlsinf.host.plan import CpuLayer, FpgaLayer, Plan, PlanError, Transfer, load_kernel, to_fpga
from hlsinf.host.device import Device, DeviceError, ReferenceDevice
from hlsinf.host.runtime import Profile, Session, run

__all__ = ["Graph", "GraphError", "Node", "load_model", "QuantError", "quantize", "requant_params", "onnxruntime_session",
           "CpuLayer", "FpgaLayer", "Plan", "PlanError", "Transfer", "load_kernel", "to_fpga",
           "Device", "DeviceError", "ReferenceDevice", "Profile", "Session", "run"]
