"""Write the bundled model: both stages as ONNX for the light install, fp16 weights for
fine-tuning, ``bundle.json`` and the model card (``cobbnet.infer.bundle`` reads them).

    python -m cobbnet.training.ship STAGE1_CKPT STAGE2_CKPT --evaluation EVAL_DIR [--out DIR] [--notes FILE]

``EVAL_DIR`` is what ``cobbnet evaluate`` wrote for the two stages on the grouped validation
split (``metrics.json``, and ``stage1/metrics.json`` for stage 1 alone when present).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import torch

from cobbnet.errors import InputError
from cobbnet.infer.bundle import BUNDLE, BUNDLE_FORMAT, CARD, MAX_MODEL_BYTES, sha256, weights_dir
from cobbnet.infer.decode import CANDIDATES
from cobbnet.io.outputs import write_bytes, write_json, write_text
from cobbnet.training import checkpoint, refine
from cobbnet.training.export import export_model, export_refine, fp16_weights, inference_net

STAGE_FILES = {"stage1": {"onnx": "stage1.onnx", "weights": "stage1.safetensors"},
               "stage2": {"onnx": "stage2.onnx", "weights": "stage2.safetensors"}}


def _half(model: torch.nn.Module) -> torch.nn.Module:
    """The model with its weights rounded to fp16 and back: what both shipped forms hold."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def _metrics(evaluation: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    both, alone = evaluation / "metrics.json", evaluation / "stage1" / "metrics.json"
    if not both.is_file():
        raise InputError(f"{both}: evaluation metrics not found (run cobbnet evaluate first)")
    read = lambda p: json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}  # noqa: E731
    return read(both), read(alone)


def ship(stage1: str | os.PathLike, stage2: str | os.PathLike, evaluation: str | os.PathLike,
         folder: str | os.PathLike | None = None, notes: str = "", split: str = "aasce-holdout") -> Path:
    """Write the bundle into ``folder`` (default: the package's ``weights/``); returns bundle.json.

    ``split`` names the frozen validation split (``configs/splits``) the stages were
    validated on; it is recorded in the shipped stage-1 config.
    """
    folder = Path(folder) if folder else weights_dir()
    metrics, stage1_metrics = _metrics(Path(evaluation))
    # a stage whose weights are the bundled ones, byte for byte, is carried over from that bundle
    before, old_sha = _bundle_before(folder)
    carried = {stage: before if _same_file(Path(path).with_suffix(".safetensors"), folder / STAGE_FILES[stage]["weights"])
               else None for stage, path in (("stage1", stage1), ("stage2", stage2))}
    net1, cfg = checkpoint.load(stage1)
    net1 = _half(net1)
    soup = checkpoint.read_meta(stage1).get("metrics", {}).get("soup") or []  # training.soup's runs
    init = _named_init(cfg.train.init, folder / STAGE_FILES["stage1"]["weights"], "stage 1", carried["stage1"])
    cfg.data.holdout_file = split  # the validation radiographs, by name, for evaluate --fold-only
    net2, meta2 = refine.load(stage2)
    net2 = _half(net2)
    t2 = meta2["config"]["train"]
    init2 = _named_init(t2.get("init"), folder / STAGE_FILES["stage2"]["weights"], "stage 2", carried["stage2"])
    size = tuple(int(s) for s in cfg.model.input_size)

    checkpoint.save(folder / "stage1", net1, cfg, {"validation": stage1_metrics, **({"soup": soup} if soup else {})},
                    dtype=torch.float16)
    refine.save(folder / "stage2", net2, refine.RefineRun(net2.cfg, refine.RefineTrain(**meta2["config"]["train"])),
                meta2.get("metrics", {}), dtype=torch.float16)
    g1, g2 = io.BytesIO(), io.BytesIO()
    export_model(inference_net(net1), g1, size)
    export_refine(net2, g2)
    write_bytes(folder / STAGE_FILES["stage1"]["onnx"], fp16_weights(g1.getvalue()))
    write_bytes(folder / STAGE_FILES["stage2"]["onnx"], fp16_weights(g2.getvalue()))

    files = [f for stage in STAGE_FILES.values() for f in stage.values()]
    files += ["stage1.json", "stage2.json"]
    total = sum((folder / f).stat().st_size for f in files)
    if total > MAX_MODEL_BYTES:
        raise InputError(f"{folder}: the two stages take {total / 2**20:.1f} MB, over {MAX_MODEL_BYTES // 2**20} MB")
    digests = {f: sha256(folder / f) for f in files}
    name = _new_name(f"cobbnet-{cfg.model.backbone}-2stage-{date.today().isoformat()}", before, old_sha, digests)
    bundle = {"format": BUNDLE_FORMAT, "name": name, "input_size": list(size), "candidates": CANDIDATES,
              **STAGE_FILES, "sha256": digests, "bytes": total,
              "validation": {"stage1+2": metrics, "stage1": stage1_metrics}}
    write_json(folder / BUNDLE, bundle)
    cfg1 = cfg.to_dict()
    cfg1["train"]["init"] = init
    cfg2 = {**meta2["config"], "train": {**t2, "init": init2}}
    write_text(folder / CARD, model_card(name, cfg1, cfg2, metrics, stage1_metrics, total, notes, soup))
    for old in ("cobbnet.safetensors", "cobbnet.json"):  # the one-stage bundle of earlier versions
        if (folder / old).is_file():
            (folder / old).unlink()
    return folder / BUNDLE


def _row(label: str, key: str, *ms: dict[str, Any]) -> str:
    cells = []
    for m in ms:
        v = m.get(key)
        ci = m.get(f"{key}_ci95")
        cells.append("-" if v is None else f"{v:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""))
    return f"| {label} | " + " | ".join(cells) + " |"


def _start(t: dict[str, Any], soup: list[dict]) -> str:
    """How the last stage-1 run began: from scratch, or from an earlier run's weights; and
    whether the weights are one run's or the average of several (``training.soup``)."""
    runs = ""
    if soup:
        seeds = ", ".join(str(r.get("seed")) for r in soup)
        runs = f"the average of the weights of {len(soup)} runs (seeds {seeds}; `cobbnet.training.soup`), each "
    if t.get("init"):
        return (f"{runs}{t['epochs']} epochs from the weights of an earlier run ({t['init']}; the phases and"
                " their configs are in docs/two-stage.md), the first phase from scratch (no ImageNet weights)")
    return f"{runs}{t['epochs']} epochs from scratch (no ImageNet weights)"


def _named_init(init: str | None, replaced: Path, stage: str, carried_from: str | None = None) -> str | None:
    """A run's ``train.init`` as the card names it: the bundled file this call replaces (or a
    copy of it) is named as such, not by its path; call it before that file is written. A stage carried over unchanged from the bundle
    ``carried_from`` began from the one bundled before that bundle."""
    if init and (Path(init).resolve() == replaced.resolve() or _same_file(Path(init), replaced)):
        if carried_from:
            return f"the {stage} bundled before {carried_from}, its fp16 weights; carried over unchanged from {carried_from}"
        return f"the {stage} bundled before this one, its fp16 weights"
    return init


def _bundle_before(folder: Path) -> tuple[str | None, dict[str, str]]:
    """The name and file digests of the bundle in ``folder`` that this call replaces (None and
    {} where there is none or it is unreadable)."""
    try:
        meta = json.loads((folder / BUNDLE).read_text(encoding="utf-8"))
        return meta.get("name"), dict(meta.get("sha256") or {})
    except (OSError, ValueError, AttributeError, TypeError):
        return None, {}


def _new_name(base: str, before: str | None, old_sha: dict[str, str], new_sha: dict[str, str]) -> str:
    """The bundle's name: ``base`` (backbone and date), or, where the bundle it replaces bears
    that name (or ``base-N``), the same name for the same weights and ``base-(N+1)`` for new ones,
    so that two bundles made on one day are told apart."""
    if before is None or not (before == base or before.startswith(base + "-")):
        return base
    weight_files = {f for f in {*old_sha, *new_sha} if f.endswith((".onnx", ".safetensors"))}
    if all(old_sha.get(f) == new_sha.get(f) for f in weight_files):  # the same weights (their JSONs carry the figures)
        return before
    suffix = before[len(base) + 1:]
    return f"{base}-{int(suffix) + 1 if suffix.isdigit() else 2}"


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and sha256(a) == sha256(b)


def _start2(t2: dict[str, Any]) -> str:
    """Where the stage-2 run began, when it began from an earlier run's weights."""
    return f"from the weights of an earlier run ({t2['init']}), " if t2.get("init") else ""


def _readout(m2: dict[str, Any]) -> str:
    if m2["head"] == "heatmap":
        return f"heatmaps at 1/{m2.get('out_stride', 2)} of the patch with a soft-argmax"
    return m2["head"]


def _views(metrics: dict[str, Any]) -> str:
    """The stage-2 test-time views the evaluation ran with (``infer.predict.VIEWS``)."""
    from cobbnet.infer.predict import VIEWS, VIEWS_DEFAULT

    n = int(metrics.get("stage2_views") or VIEWS_DEFAULT)
    names = {(1.0, False): "the patch as cut", (1.0, True): "the patch mirrored left to right"}
    parts = [names.get(v, f"a patch {v[0]:g} times as wide") for v in VIEWS[:n]]
    return f"{n} view{'s' if n > 1 else ''} ({', '.join(parts)})"


def _norm(m: dict[str, Any]) -> str:
    if m.get("input_norm") == "image":
        return "each radiograph's own mean and std"
    return "fixed constants"


def _repaired(metrics: dict[str, Any]) -> str:
    names = metrics.get("labels_repaired") or []
    if not names:
        return ""
    return (f"Landmarks and levels are compared with the labels in canonical order where `cobbnet audit` finds"
            f" their points faulty, as training repairs them: {len(names)} here ({', '.join(names)}), whose"
            " vertebrae or corners are listed out of order; the last two rows compare with the labels as written.\n")


def model_card(name: str, cfg1: dict[str, Any], cfg2: dict[str, Any], metrics: dict[str, Any],
               stage1_metrics: dict[str, Any], size: int, notes: str = "", soup: list[dict] | None = None) -> str:
    m, d, t, loss = cfg1["model"], cfg1["data"], cfg1["train"], cfg1["loss"]
    t2, m2 = cfg2["train"], cfg2["model"]
    rows = [("SMAPE (%), 95% bootstrap interval", "smape"),
            ("landmark error (px, by level)", "landmark_error_px"),
            ("landmark error (px, nearest true vertebra)", "landmark_error_matched_px"),
            ("MAE angle 1 (deg)", "mae_pt"), ("MAE angle 2 (deg)", "mae_mt"), ("MAE angle 3 (deg)", "mae_tl"),
            ("share with every angle within 5 deg (%)", "within_5deg_all_pct"),
            ("share with all 17 levels right (%)", "levels_right_pct"),
            ("share with the whole spine named a level down, T1 missed (%)", "levels_shifted_down_pct"),
            ("share with the whole spine named a level or more up, C7 taken as T1 (%)", "levels_shifted_up_pct"),
            ("share with a level skipped or doubled inside (%)", "levels_partly_wrong_pct"),
            ("landmark error (px, by level), against the labels as written", "landmark_error_px_as_labelled"),
            ("share with all 17 levels right (%), against the labels as written", "levels_right_pct_as_labelled")]
    table = "\n".join(_row(label, key, stage1_metrics, metrics) for label, key in rows)
    return f"""# cobbnet bundled model: {name}

Made {date.today().isoformat()} by `python -m cobbnet.training.ship`: `stage1.onnx` and
`stage2.onnx` (ONNX, weights stored in fp16, arithmetic in fp32) run by the light install;
`stage1.safetensors`/`stage2.safetensors` (fp16) with their JSON configs for fine-tuning;
{size / 2**20:.1f} MB in all. `bundle.json` lists every file's sha256.

## What it is
- **Stage 1**, the paper's network: {m['backbone']} at a {m['input_size'][0]}x{m['input_size'][1]}
  input, CenterNet-style heads (centre heatmap, centre offset, corner offsets) and a spine-mask
  head, trained with the heterogeneous consistency loss ({loss['fwt']} FWT). It proposes
  {CANDIDATES} candidate vertebrae; a chain (`cobbnet.spine.chain`) picks T1..L5 among them
  by score, spacing, lateral smoothness and where its ends lie in the image, and fills a missed level by interpolation
  (flagged `interpolated`).
- **Stage 2**, a corner network on each vertebra's patch of the original radiograph (centred
  on it, turned to its tilt, twice its width, {m2['patch_size']} px a side), read out by
  {_readout(m2)}; its corners are mapped back to the radiograph. The predictor reads each
  vertebra in {_views(metrics)} and averages their corners (`--views` sets how many).

## Intended use
Research, and decision support by people who read the radiograph themselves.
It is **not a diagnostic device**: it has not been validated clinically, and its angles must
be checked against the overlay it draws.

## Data and licence
AASCE 2019 (BoostNet) training split, 481 radiographs of 237 patients (grouped by the number
before the view letter). Validation: the frozen split `configs/splits/{d.get('holdout_file')}.txt`,
46 patients and 94 radiographs; no patient is on both sides. Faulty training labels: {d.get('faulty_labels')}.
The AASCE images are under a research licence and are not distributed here; the weights are
derived from them, so use them for research under the same terms.

## Training
- Stage 1: {_start(t, soup or [])}, batch {t['batch_size']},
  Adam lr {t['lr']}, {t['warmup_steps']} warm-up steps, {t['lr_schedule']} schedule, weight
  EMA {t.get('ema', 0)}, heatmap focal loss from logits: {loss.get('focal_logits')}, input
  normalised by {_norm(m)}, {d.get('extra_synthetic', 0)} synthetic radiographs added to the
  training patients.
- Stage 2: {_start2(t2)}{t2['epochs']} epochs on patches of the true vertebrae with frames jittered by
  {t2['jitter_centre']} widths, {t2['jitter_angle']} degrees and {t2['jitter_scale']} log-scale,
  batch {t2['batch_size']}, AdamW lr {t2['lr']}.

## Validation ({metrics.get('n_images', '?')} radiographs of held-out patients)

The shipped bundle as the light install runs it ({metrics.get('mode', '?')}):
`cobbnet evaluate --data ../shared/boostnet_labeldata --fold-only --out DIR` reproduces these.

| metric | stage 1 alone | stage 1 + 2 |
| --- | --- | --- |
{table}

Angles 1-3 are the AASCE challenge's three values (angle 1 the largest), not regions.
{_repaired(metrics)}
## Limits
- A short CPU schedule, far from the paper's GPU training.
- Radiographs unlike AASCE's (other views, implants, other scanners and populations) will
  be read worse; the input gate rejects what is clearly not an AP spine radiograph.
{notes}
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cobbnet.training.ship", description=__doc__.split("\n")[0])
    p.add_argument("stage1", type=Path)
    p.add_argument("stage2", type=Path)
    p.add_argument("--evaluation", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--notes", type=Path, default=None)
    a = p.parse_args(argv)
    print(ship(a.stage1, a.stage2, a.evaluation, a.out, a.notes.read_text(encoding="utf-8") if a.notes else ""))


if __name__ == "__main__":
    main()
