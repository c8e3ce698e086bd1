"""One Amaranth component per dataflow stage of the kernel.

Each stage is a ``wiring.Component`` with ``amaranth.lib.stream`` ports and sustains one
stream item per cycle when fed and unblocked. See docs/architecture.md for what each
stream carries.
"""
