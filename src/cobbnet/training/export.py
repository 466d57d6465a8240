"""ONNX export of a checkpoint and an ONNX Runtime engine with the predictor's contract.

``export_onnx`` writes a float32 ONNX graph: input ``image (B, 1, H, W)`` in [0, 1] (``B``
dynamic by default, ``H x W`` fixed to the model's input size). By default the graph is the
inference network :class:`cobbnet.nn.model.PeakNet`, outputs ``hm``, ``scores``, ``ind``,
``reg``, ``cnr`` (offsets read at the 17 peaks); ``full=True`` gives the training network's
dense heads ``hm``, ``reg``, ``cnr``, ``mask``. Either is what ``decode`` reads.
``OnnxRunner.run_network`` takes and returns torch tensors exactly like
``Predictor.run_network``, so the predictor can swap engines.

The graph comes from torch's TorchScript-based exporter (``dynamo=False``): the
torch.export-based default needs the ``onnxscript`` package, which cobbnet does not depend on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from cobbnet.errors import InputError
from cobbnet.infer.decode import CANDIDATES
from cobbnet.infer.onnx import OnnxModel
from cobbnet.io.outputs import write_bytes, write_json
from cobbnet.nn.heads import HEADS
from cobbnet.nn.model import PEAK_OUTPUTS, CobbNet, PeakNet
from cobbnet.training import checkpoint

INPUT_NAME = "image"
FULL_OUTPUTS: tuple[str, ...] = tuple(HEADS)  # the training network's dense heads
OPSET = 17  # bilinear Resize with half-pixel centres and every other op the network uses
CACHE_ENV = "COBBNET_CACHE"  # overrides the folder of cached ONNX graphs


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's deprecation notice and tracer warnings about fixed shapes.

    The input size is fixed at export on purpose, and every export is checked numerically
    against torch (tests/test_export.py), so these warnings carry no information here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield


def export_model(model: torch.nn.Module, f: str | os.PathLike | io.BytesIO,
                 input_size: tuple[int, int], batch_dynamic: bool = True) -> None:
    """Trace ``model`` (a CobbNet or PeakNet, any memory format, float32 weights) at
    ``input_size = (H, W)`` into ``f``; the graph's outputs are named ``model.outputs``."""
    H, W = (int(s) for s in input_size)
    # a copy: .to() and .float() work in place, and the caller's model keeps its layout
    model = copy.deepcopy(model).float().eval().to("cpu", memory_format=torch.contiguous_format)
    names = list(model.outputs)
    dummy = torch.rand(1, 1, H, W)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *names)} if batch_dynamic else None
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(model, (dummy,), f, dynamo=False, input_names=[INPUT_NAME],
                          output_names=names, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True)


def inference_net(model: torch.nn.Module) -> torch.nn.Module:
    """The network the predictor runs: a CobbNet's PeakNet with ``CANDIDATES`` peaks for the
    chain to choose from (anything else as it is)."""
    return PeakNet(model, CANDIDATES) if isinstance(model, CobbNet) else model


REFINE_INPUT = "patches"
REFINE_OUTPUT = "corners"


def export_refine(model: torch.nn.Module, f: str | os.PathLike | io.BytesIO) -> None:
    """Trace a stage-2 ``CornerNet``: input ``patches (N, 1, P, P)``, output ``corners (N, 4, 2)``."""
    model = copy.deepcopy(model).float().eval()
    P = model.cfg.patch_size
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(model, (torch.rand(2, 1, P, P),), f, dynamo=False, input_names=[REFINE_INPUT],
                          output_names=[REFINE_OUTPUT], opset_version=OPSET, do_constant_folding=True,
                          dynamic_axes={REFINE_INPUT: {0: "n"}, REFINE_OUTPUT: {0: "n"}})


def fp16_weights(graph: bytes) -> bytes:
    """The graph with its float32 weights stored as float16 and cast back to float32 when
    loaded: half the size, fp32 arithmetic (ONNX Runtime folds the casts at load time)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load_from_string(graph)
    g = m.graph
    casts = []
    for init in list(g.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) == 0 or numpy_helper.to_array(init).size < 16:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        g.initializer.remove(init)
        g.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    for node in reversed(casts):
        g.node.insert(0, node)
    return m.SerializeToString()


def export_onnx(checkpoint_path: str | os.PathLike | None, out_path: str | os.PathLike,
                input_size: tuple[int, int] | None = None, batch_dynamic: bool = True,
                full: bool = False) -> Path:
    """Export a checkpoint (None: the bundled model) to ``out_path``, written atomically.

    ``input_size`` (H, W) defaults to the size the checkpoint was trained at; ``full``
    exports every dense head instead of the inference network.
    """
    from cobbnet.infer.bundle import bundled_checkpoint

    path = Path(checkpoint_path) if checkpoint_path else bundled_checkpoint()
    model, cfg = checkpoint.load(path)
    if not full:
        model = inference_net(model)
    size = tuple(input_size or cfg.model.input_size)
    out = Path(out_path)
    _export_file(model, out, size, batch_dynamic)
    return out


def _export_file(model: torch.nn.Module, out: Path, input_size: tuple[int, int],
                 batch_dynamic: bool = True) -> None:
    """``export_model`` into a private temporary folder, then ``out`` written atomically:
    whatever the exporter leaves beside its file stays out of the destination folder."""
    with tempfile.TemporaryDirectory(prefix="cobbnet-export-") as tmp:
        graph = Path(tmp) / "model.onnx"
        export_model(model, graph, input_size, batch_dynamic)
        write_bytes(out, graph.read_bytes())


def cache_dir() -> Path:
    """Where exported graphs of checkpoints are kept: ``$COBBNET_CACHE`` or ``~/.cache/cobbnet``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "cobbnet"


def cached_onnx(checkpoint_path: str | os.PathLike, input_size: tuple[int, int] | None = None,
                model: torch.nn.Module | None = None) -> Path:
    """The inference graph (PeakNet) of a checkpoint, exported once and reused.

    The cache key covers the weights' and config's bytes, the input size, the outputs and
    the torch version, so a changed checkpoint or exporter never serves a stale graph.
    ``model``, the checkpoint already loaded, spares loading it again on a cache miss.
    """
    weights, meta = checkpoint.paths(checkpoint_path)
    digest = hashlib.sha256()
    for part in (weights, meta):
        if not part.is_file():
            raise InputError(f"{part}: checkpoint file not found")
        digest.update(part.read_bytes())
    size = tuple(input_size or checkpoint.read_meta(checkpoint_path)["config"]["model"]["input_size"])
    digest.update(f"{size}|{torch.__version__}|{OPSET}|{','.join(PEAK_OUTPUTS)}|{CANDIDATES}".encode())
    out = cache_dir() / f"{weights.stem}-{digest.hexdigest()[:16]}.onnx"
    problem = _cache_problem(out, digest.hexdigest())
    if problem is None:
        return out
    # on the console even from the Python API: an export takes a while, once per model
    sys.stderr.write(f"cobbnet: {problem}; exporting {weights.name} to ONNX once for this model: {out}\n")
    if model is None:
        export_onnx(checkpoint_path, out, size)
    else:
        _export_file(inference_net(model), out, size)
    write_json(_stamp(out), {"checkpoint": digest.hexdigest(), "onnx_sha256": _sha256(out)})
    return out


def _stamp(graph: Path) -> Path:
    """The JSON beside a cached graph naming the checkpoint it came from and its own digest."""
    return graph.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_problem(graph: Path, checkpoint_digest: str) -> str | None:
    """Why the cached ``graph`` cannot be used (absent, unstamped, from another checkpoint,
    changed since it was written), or None when it can."""
    if not graph.is_file():
        return "no cached ONNX graph"
    try:
        stamp = json.loads(_stamp(graph).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"cached ONNX graph {graph.name} has no valid stamp"
    if not isinstance(stamp, dict) or stamp.get("checkpoint") != checkpoint_digest:
        return f"cached ONNX graph {graph.name} is not of this checkpoint"
    if stamp.get("onnx_sha256") != _sha256(graph):
        return f"cached ONNX graph {graph.name} is broken (its bytes changed since export)"
    return None


def runner_for_checkpoint(checkpoint_path: str | os.PathLike, model: torch.nn.Module,
                          input_size: tuple[int, int], threads: int | None = None) -> OnnxRunner:
    """ONNX Runtime for a loaded checkpoint: its cached graph, or an in-memory export of
    ``model`` (the same weights) where the cache folder cannot be written."""
    try:
        return OnnxRunner(cached_onnx(checkpoint_path, input_size, model), threads)
    except OSError:
        return OnnxRunner.from_model(inference_net(model), input_size, threads)


class OnnxRunner:
    """An ``infer.onnx.OnnxModel`` with torch tensors in and out (the benchmark modes' contract).

    ``source`` is an ``.onnx`` path or the graph's bytes; ``threads`` defaults to torch's
    intra-op thread count, so both engines use the same cores. ``model`` is the numpy session
    the predictor runs.
    """

    def __init__(self, source: str | os.PathLike | bytes, threads: int | None = None):
        self.model = OnnxModel(source, int(threads or torch.get_num_threads()))
        shape = self.model.input_shape  # [batch, 1, H, W]
        self.input_size: tuple[int, int] = (int(shape[2]), int(shape[3]))
        self.output_names = self.model.output_names
        self.network_images = 0

    @property
    def network_seconds(self) -> float:
        return self.model.seconds

    @classmethod
    def from_model(cls, model: torch.nn.Module, input_size: tuple[int, int],
                   threads: int | None = None) -> OnnxRunner:
        """Export an in-memory model (a CobbNet or PeakNet, as it is; no file written) and open it."""
        buf = io.BytesIO()
        export_model(model, buf, input_size)
        return cls(buf.getvalue(), threads)

    def run_network(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 1, H, W)`` float in [0, 1] -> heads dict of float32 CPU tensors."""
        out = self.model(batch.detach().to("cpu", torch.float32).numpy())
        self.network_images += len(batch)
        return {name: torch.from_numpy(v) for name, v in out.items()}
