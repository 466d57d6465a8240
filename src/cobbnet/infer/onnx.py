"""ONNX Runtime sessions for the two stages: numpy in, numpy out, no torch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from cobbnet.errors import InputError


class OnnxModel:
    """One ONNX graph on the CPU. ``model(x)`` -> ``{output name: array}``.

    ``source`` is an ``.onnx`` path or the graph's bytes; ``threads`` None lets ONNX Runtime
    use every core. ``seconds`` and ``calls`` add up the time spent in the graph.
    """

    def __init__(self, source: str | os.PathLike | bytes, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or 0)
        opts.inter_op_num_threads = 1
        # idle worker threads sleep instead of spinning: the two stages are two sessions, and a
        # session's spinning threads took the cores from the other (stage 1 ran 82 instead of
        # 52 ms a radiograph right after stage 2 on 2 cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        name = "graph" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise InputError(f"{name}: ONNX model not found")
        try:
            model = source if isinstance(source, bytes) else str(source)
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors on bad files
            raise InputError(f"{name}: not a loadable ONNX model ({str(err).splitlines()[0]})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.seconds, self.calls = 0.0, 0

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        start = time.perf_counter()
        values = self.session.run(self.output_names, {self.input_name: x})
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return dict(zip(self.output_names, values, strict=True))
