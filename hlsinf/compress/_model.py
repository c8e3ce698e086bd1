"""What every compression pass shares on top of the IR (:mod:`hlsinf.ir`): its error, reading, writing.

A pass imports the model editable (``load``), rewrites the graph with the IR's edits and
writes it back (``save``: unused initializers dropped, shapes inferred again, the model
checked). Errors the IR raises inside a pass (a missing file, a parameter that is not a
constant) reach the caller as :class:`CompressError` through ``compress_errors``.
"""

from __future__ import annotations

import functools

from hlsinf.ir import Graph, GraphError, load_model, to_onnx

__all__ = ["CompressError", "compress_errors", "load", "save"]


class CompressError(GraphError):
    """A compression pass cannot handle its input; the message names the node or parameter."""


def compress_errors(fn):
    """Let ``fn`` raise :class:`CompressError` for every :class:`~hlsinf.ir.GraphError`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CompressError:
            raise
        except GraphError as e:
            raise CompressError(str(e)) from None
    return wrapper


def load(model) -> Graph:
    """An editable IR graph of ``model`` (a path or ``ModelProto``, never modified)."""
    return load_model(model, static=False)


def save(g: Graph):
    """The edited graph as a checked ``ModelProto`` with shapes inferred again.

    Graph outputs keep their declared shapes: the passes never change a graph output.
    """
    import onnx
    from onnx import shape_inference

    g.drop_unused_initializers()
    model = shape_inference.infer_shapes(to_onnx(g))
    onnx.checker.check_model(model)
    return model
