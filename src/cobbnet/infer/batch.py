"""The batch run behind ``cobbnet predict``: files in, one JSON (+ overlay, + PDF) each and
``results.csv`` out, with guarantees about the files it touches.

- Inputs: the files named, and the images under the folders named, except the outputs of
  earlier runs (overlays carry a PNG text chunk ``MARKER``) and, when ``--out`` lies inside a
  folder given, everything under ``--out``.
- Output names mirror each input's path relative to the folder it was found in
  (``scans/a/IM1.dcm`` given as ``scans`` -> ``OUT/a/IM1.json``); names that would collide (the
  same file name from two folders, ``x.jpg`` beside ``x.png``) or land on a file that is not a
  cobbnet output (an input, when ``--out`` is the input folder) take more of the input's path.
  No input, and no file cobbnet did not write, is ever replaced.
- ``--out`` is checked writable before the model loads.
- ``results.csv`` gets one complete row per finished image, appended with a single write and
  flushed, so an interrupted or killed run keeps every finished row and no half row. With
  ``resume``, inputs that already have a row and their files are skipped.
- An image's files are written to temporaries and renamed when all are complete, the JSON
  last: a run stopped in between leaves at most an overlay without its JSON, which the next
  run replaces; no JSON ever points at a missing or half-written overlay.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import SimpleNamespace
from typing import Any

import numpy as np

from cobbnet.errors import InputError
from cobbnet.infer.gate import assess, check_image
from cobbnet.io.images import IMAGE_SUFFIXES, find_images, read_image_with_warnings
from cobbnet.io.outputs import atomic_path, write_text

RESULTS_CSV = "results.csv"
MARKER = ("cobbnet", "overlay")  # PNG text chunk (key, value) on every overlay this module writes
PNG_COMPRESSION = 1  # zlib level: overlays are large and written once


@dataclass(frozen=True)
class Item:
    """One input: its path as found, and its output name (no suffix) relative to ``--out``."""

    path: Path
    key: PurePath

    def output(self, out: Path, suffix: str) -> Path:
        return out / self.key.with_name(self.key.name + suffix)


@dataclass
class Options:
    """What ``cobbnet predict`` passes on; new output kinds add a field here."""

    out: Path
    checkpoint: Path | None = None
    precision: str = "auto"
    engine: str = "auto"
    refine: Path | bool | None = None  # stage 2: None the bundled one, False off, or a checkpoint
    batch_size: int = 4
    overlay: bool = True
    report: bool = False  # a one-page PDF per image
    resume: bool = False
    challenge_csv: bool = False  # also angles.csv + filenames.csv in the AASCE layout
    edge_prior: bool = True  # the chain weighs where its ends lie in the image (spine.chain)
    views: int | None = None  # stage 2's test-time views (infer.predict.VIEWS); None: the predictor's

    def suffixes(self) -> tuple[str, ...]:
        """Output file suffixes per image, the JSON first."""
        return (".json", *((".png",) if self.overlay else ()), *((".pdf",) if self.report else ()))


@dataclass
class Summary:
    records: list[dict] = field(default_factory=list)  # result JSON of each finished image
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    resumed: int = 0  # inputs skipped because their results exist
    total: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.unreadable or self.rejected)


# ---- recognising cobbnet's own files ----


def is_overlay(path: Path) -> bool:
    """True for a PNG this module wrote (its ``MARKER`` text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get(MARKER[0]) == MARKER[1]
    except Exception:  # unreadable files are not ours; the reader reports them as inputs
        return False


def _is_own(path: Path) -> bool:
    """True when ``path`` is a file an earlier cobbnet run wrote (so replacing it is fine)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            return is_overlay(path)
        if suffix == ".json":
            d = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(d, dict) and ("schema_version" in d or {"name", "landmarks"} <= set(d))
        if suffix == ".pdf":
            return b"(cobbnet " in path.read_bytes()
        if suffix == ".csv":
            with open(path, encoding="utf-8") as f:
                return f.readline().startswith(("input,status,", "filename,"))
    except (OSError, ValueError):
        return False
    return False


# ---- inputs and output names ----


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def collect(paths: Sequence[str | os.PathLike], out: Path) -> list[tuple[Path, Path | None]]:
    """(image, folder it was found in or None for a file named) for every input, in order.

    Skips earlier outputs and, for a folder that contains ``out`` below it, files under ``out``.
    Raises InputError when nothing is left.
    """
    out_abs = Path(os.path.abspath(out))
    found: dict[Path, tuple[Path, Path | None]] = {}
    skipped = 0
    for p in map(Path, paths):
        root = p if p.is_dir() else None
        root_abs = Path(os.path.abspath(p))
        for f in find_images([p]):
            f_abs = Path(os.path.abspath(f))
            if root is not None and out_abs != root_abs and _inside(out_abs, root_abs) and _inside(f_abs, out_abs):
                skipped += 1
                continue
            if f.suffix.lower() == ".png" and is_overlay(f):
                skipped += 1
                continue
            found.setdefault(f_abs, (f, root))
    if not found:
        raise InputError(f"{', '.join(map(str, paths))}: no images found"
                         + (f" ({skipped} earlier cobbnet outputs skipped)" if skipped else ""))
    return list(found.values())


def _candidates(path: Path, root: Path | None) -> Iterator[PurePath]:
    """Output names for ``path``, each taking more of it: ``a/x``, ``a/x.jpg``, ``p/a/x``, ..."""
    rel = path.relative_to(root) if root is not None else PurePath(path.name)
    parts = Path(os.path.abspath(path)).parts
    seen = set()
    for depth in range(len(rel.parts), len(parts)):
        tail = PurePath(*parts[len(parts) - depth:])
        # strip an image suffix only: a DICOM file named by its UID keeps every part of it
        for key in (tail.with_suffix("") if tail.suffix.lower() in IMAGE_SUFFIXES else tail, tail):
            if key not in seen:
                seen.add(key)
                yield key
    for n in range(2, 10**6):
        yield PurePath(*parts[1:]).with_name(f"{path.name}-{n}")


def plan(found: Sequence[tuple[Path, Path | None]], out: Path, suffixes: Sequence[str]) -> list[Item]:
    """Unique output names: the shortest candidate that collides with no other input's name
    and whose files would replace no input and no file cobbnet did not write."""
    inputs = {Path(os.path.abspath(f)) for f, _ in found}
    names = [_candidates(f, root) for f, root in found]
    keys = [next(n) for n in names]
    verdicts: dict[PurePath, bool] = {}

    def blocked(key: PurePath) -> bool:
        if key not in verdicts:
            targets = [out / key.with_name(key.name + s) for s in suffixes]
            verdicts[key] = any(Path(os.path.abspath(t)) in inputs or (t.exists() and not _is_own(t))
                                for t in targets)
        return verdicts[key]

    changed = True
    while changed:
        changed = False
        seen: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            seen.setdefault(str(k).lower(), []).append(i)  # case-insensitive file systems too
        clashes = {i for group in seen.values() if len(group) > 1 for i in group}
        for i in range(len(keys)):
            if i in clashes or blocked(keys[i]):
                keys[i], changed = next(names[i]), True
    return [Item(f, k) for (f, _), k in zip(found, keys, strict=True)]


# ---- the output folder ----


def check_out(out: Path) -> None:
    """Create ``out`` and prove it writable, or raise InputError (before any model loads)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cobbnet-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    csv_path = out / RESULTS_CSV
    if csv_path.exists() and not _is_own(csv_path):
        raise InputError(f"--out {out}: {RESULTS_CSV} there was not written by cobbnet; choose another --out")


class ResultsCsv:
    """``results.csv``, grown one whole row at a time (one unbuffered write, then fsync)."""

    def __init__(self, path: Path, columns: Sequence[str], keep: Sequence[Sequence[str]] = ()):
        self.path = path
        write_text(path, _csv_lines([columns, *keep]))  # the header (and kept rows), atomically
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def append(self, row: Sequence[Any]) -> None:
        data = _csv_lines([row]).encode("utf-8")
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _csv_lines(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def finished_rows(out: Path, items: Sequence[Item], options: Options) -> dict[str, list[str]]:
    """Rows of ``results.csv`` whose input is done: every output file of it exists.

    Only complete rows count (a last line without its newline is dropped). Overlays are not
    required of rejected inputs, which have none.
    """
    path = out / RESULTS_CSV
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text[: text.rfind("\n") + 1])))[1:]
    by_input = {str(it.path): it for it in items}
    done = {}
    for row in rows:
        item = by_input.get(row[0]) if row else None
        if item is None or len(row) < 2:
            continue
        needed = options.suffixes() if row[1] != "rejected" else (".json", *((".pdf",) if options.report else ()))
        if all(item.output(out, s).is_file() for s in needed):
            done[row[0]] = row
    return done


# ---- one image's files ----


def _write_overlay(path: Path, image: np.ndarray, prediction: Any) -> None:
    from PIL import Image, PngImagePlugin

    from cobbnet.report.overlay import draw_overlay

    rgb = draw_overlay(image, prediction.landmarks, prediction.cobb, prediction.scores,
                       title=str(prediction.name))
    info = PngImagePlugin.PngInfo()
    info.add_text(*MARKER)
    Image.fromarray(rgb).save(path, format="PNG", pnginfo=info, compress_level=PNG_COMPRESSION)


def write_outputs(item: Item, out: Path, record: dict, image: np.ndarray, prediction: Any,
                  options: Options) -> None:
    """The image's JSON, overlay and PDF: all written to temporaries, then renamed, JSON last."""
    with contextlib.ExitStack() as stack:
        json_tmp = stack.enter_context(atomic_path(item.output(out, ".json")))  # renamed last
        json_tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if options.report:
            from cobbnet.report.pdf import report_pdf

            stack.enter_context(atomic_path(item.output(out, ".pdf"))).write_bytes(report_pdf(record, image))
        if options.overlay and record["status"] != "rejected":
            _write_overlay(stack.enter_context(atomic_path(item.output(out, ".png"))), image, prediction)


# ---- the run ----


def _rejected(path: Path, image: np.ndarray, reason: str, warnings: list[str], model: Any) -> Any:
    """A prediction-like record of an image the gate turned away before the network."""
    H, W = image.shape
    return SimpleNamespace(name=str(path), image_size=(W, H), status="rejected", reason=reason,
                           warnings=list(warnings), model=model if isinstance(model, dict) else None)


def _assessed(prediction: Any) -> Any:
    """The chain check on a prediction the predictor passed as "ok" (a no-op when the predictor
    ran ``assess`` itself: the same chain gives the same verdict)."""
    lm = getattr(prediction, "landmarks", None)
    if (getattr(prediction, "status", None) or "ok") != "ok" or lm is None or not np.all(np.isfinite(lm)):
        return prediction
    status, reason, warnings = assess(lm, prediction.scores, getattr(prediction, "flags", None),
                                      prediction.image_size, getattr(prediction, "level_doubt", None))
    prediction.status, prediction.reason = status, reason
    prediction.warnings = [*(getattr(prediction, "warnings", None) or []), *warnings]
    return prediction


def _record(prediction: Any) -> dict:
    from cobbnet.report.result import result_record

    return result_record(prediction)


def _unreadable_record(path: Path, message: str) -> dict:
    """Just what ``batch_csv_row`` reads, for a file that could not be decoded (no JSON)."""
    return {"input": {"path": str(path)}, "status": "rejected", "curves": [], "challenge": None,
            "warnings": [message]}


def run(paths: Sequence[str | os.PathLike], options: Options,
        on_start: Callable[[int, str], None] | None = None,
        on_done: Callable[[Path, dict | None, str | None], None] | None = None) -> Summary:
    """Predict every input under ``paths`` into ``options.out``.

    ``on_start(n, mode)`` is called once the model is loaded, with the number of images to do;
    ``on_done(path, record, problem)`` after each image (``problem``: why it was unreadable or
    rejected, else None). Raises InputError for bad options, an unwritable ``out`` (both before
    the model loads) or a write failing midway (finished rows stay); KeyboardInterrupt passes
    through with how far the run got.
    """
    from cobbnet.infer.predict import check_views
    from cobbnet.report.overlay import BATCH_CSV_COLUMNS, batch_csv_row

    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: must be at least 1")
    if options.views is not None:
        check_views(options.views, "--views")
    out = options.out
    check_out(out)
    items = plan(collect(paths, out), out, options.suffixes())
    done = finished_rows(out, items, options) if options.resume else {}
    todo = [it for it in items if str(it.path) not in done]
    summary = Summary(resumed=len(done), total=len(items))
    predictor = _load_predictor(options) if todo else None
    if on_start:
        on_start(len(todo), getattr(predictor, "mode", ""))
    table = ResultsCsv(out / RESULTS_CSV, BATCH_CSV_COLUMNS, list(done.values()))
    finished = 0
    try:
        for batch in _batches(todo, options.batch_size):
            for item, record, image, prediction, problem in _predict(batch, predictor):
                if record is not None and image is not None:
                    write_outputs(item, out, record, image, prediction, options)
                    summary.records.append(record)
                row = record if image is not None else _unreadable_record(item.path, problem or "")
                table.append(batch_csv_row(row))
                finished += 1
                if problem is not None:
                    (summary.rejected if image is not None else summary.unreadable).append((item.path, problem))
                if on_done:
                    on_done(item.path, record, problem)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{finished + len(done)} of {len(items)} images done and in "
                                f"{out / RESULTS_CSV}; rerun with --resume to finish") from None
    except OSError as err:
        raise InputError(f"--out {out}: writing results failed ({err.strerror or err}); "
                         f"{finished + len(done)} finished rows kept in {RESULTS_CSV}") from None
    finally:
        table.close()
    if options.challenge_csv:
        write_challenge_csv(out)
    return summary


CHALLENGE_FILES = ("angles.csv", "filenames.csv")


def write_challenge_csv(out: Path) -> tuple[Path, Path]:
    """``angles.csv`` and ``filenames.csv`` in the AASCE challenge's layout, from results.csv:
    no header, three comma-separated angles a line (the challenge's order, the first the
    largest) and the input on the same line of filenames.csv; an image without angles
    (rejected or unreadable) gets ``nan,nan,nan``. Both written whole, atomically."""
    rows = list(csv.DictReader(io.StringIO((out / RESULTS_CSV).read_text(encoding="utf-8"))))
    cols = [f"challenge_angle_{i}_deg" for i in (1, 2, 3)]
    angles = [[row[c] if row[c] else "nan" for c in cols] for row in rows]
    paths = (out / CHALLENGE_FILES[0], out / CHALLENGE_FILES[1])
    write_text(paths[0], _csv_lines(angles))
    write_text(paths[1], "".join(f"{row['input']}\n" for row in rows))
    return paths


def _load_predictor(options: Options) -> Any:
    from cobbnet.infer.predict import Predictor

    try:
        return Predictor(options.checkpoint, refine=options.refine, precision=options.precision, engine=options.engine,
                         edge_prior=options.edge_prior, views=options.views)
    except ValueError as err:
        raise InputError(f"--engine/--precision: {err}") from None


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _predict(batch: list[Item], predictor: Any) -> Iterator[tuple]:
    """(item, record, image, prediction, problem) for each item in order: unreadable files have
    no image or record; images the gate rejects never reach the network."""
    read: list[tuple[Item, np.ndarray | None, list[str], str | None]] = []
    for item in batch:
        try:
            image, warnings = read_image_with_warnings(item.path)
        except InputError as err:
            read.append((item, None, [], str(err)))
            continue
        read.append((item, image, warnings, check_image(image)))
    passed = [(item, image) for item, image, _, reason in read if image is not None and reason is None]
    predictions = iter(predictor.predict_arrays([im for _, im in passed], [str(it.path) for it, _ in passed])
                       if passed else [])
    for item, image, warnings, problem in read:
        if image is None:
            yield item, None, None, None, problem
            continue
        if problem is not None:
            prediction = _rejected(item.path, image, problem, warnings, getattr(predictor, "model", None))
        else:
            prediction = _assessed(next(predictions))
            prediction.warnings = [*warnings, *(getattr(prediction, "warnings", None) or [])]
        record = prediction.as_dict() if hasattr(prediction, "as_dict") else _record(prediction)
        if record["status"] == "rejected" and problem is None:
            problem = f"{item.path}: {record['reason'] or 'rejected'}"
        elif problem is not None:
            problem = f"{item.path}: {problem}"
        yield item, record, image, prediction, problem
