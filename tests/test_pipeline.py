"""Train, checkpoint, resume, predict and evaluate, end to end on tiny synthetic runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cobbnet.cli import app
from cobbnet.errors import InputError
from cobbnet.infer.predict import Predictor
from cobbnet.io.synthetic import write_dataset
from cobbnet.training import checkpoint
from cobbnet.training.config import load_config
from cobbnet.training.train import completed_epochs, state_checkpoint, train

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = ["data.synthetic_train=8", "data.synthetic_val=4", "data.synthetic_size=[256,128]",
        "model.input_size=[128,64]", "train.batch_size=4", "train.threads=2"]
runner = CliRunner()


def tiny_config(out: Path, *extra: str):
    return load_config(SMOKE, [*TINY, f"train.out_dir={out}", *extra])


def log_rows(folder: Path) -> list[dict]:
    """Every row of every CSV log of a run (one version folder per start)."""
    return [row for path in sorted(folder.glob("logs/version_*/metrics.csv"))
            for row in csv.DictReader(path.open())]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("runs")
    return train(tiny_config(out, "train.epochs=2"), progress=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = write_dataset(tmp_path_factory.mktemp("imgs") / "ds", 3, seed=7, size=(256, 128))
    return root


def test_run_folder_holds_config_logs_and_weights(tiny_run):
    folder = Path(tiny_run["run_dir"])
    assert (folder / "config.yaml").is_file()
    for stem in ("best", "last"):
        assert (folder / f"{stem}.safetensors").is_file() and (folder / f"{stem}.json").is_file()
    assert (folder / "state" / "last.ckpt").is_file()
    rows = log_rows(folder)
    assert {"val/total", "val/smape", "train/total_epoch"} <= set(rows[0]) | {k for r in rows for k in r}
    assert np.isfinite(tiny_run["val/total"])


def test_checkpoint_rebuilds_the_model_from_its_two_files(tiny_run):
    model, cfg = checkpoint.load(tiny_run["best"])
    assert cfg.model.input_size == (128, 64)
    again, _ = checkpoint.load(tiny_run["best"])
    x = torch.rand(1, 1, 128, 64)
    with torch.no_grad():
        a, b = model(x), again(x)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_checkpoint_that_does_not_fit_the_code(tiny_run, tmp_path):
    meta = json.loads(Path(tiny_run["best"]).with_suffix(".json").read_text())
    meta["config"]["model"]["backbone"] = "resnet34"
    (tmp_path / "bad.json").write_text(json.dumps(meta))
    (tmp_path / "bad.safetensors").write_bytes(Path(tiny_run["best"]).read_bytes())
    with pytest.raises(InputError, match="bad.safetensors"):
        checkpoint.load(tmp_path / "bad.safetensors")
    meta["config"]["model"]["backbone"] = "no_such_net"
    (tmp_path / "bad.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="bad.json"):
        checkpoint.load(tmp_path / "bad.safetensors")


def test_fp16_checkpoint_loads_as_float32(tiny_run, tmp_path):
    model, cfg = checkpoint.load(tiny_run["best"])
    path = checkpoint.save(tmp_path / "half", model, cfg, dtype=torch.float16)
    assert path.stat().st_size < Path(tiny_run["best"]).stat().st_size * 0.6
    back, _ = checkpoint.load(path)
    assert all(p.dtype == torch.float32 for p in back.parameters())


def test_resume_continues_without_losing_an_epoch(tmp_path):
    first = train(tiny_config(tmp_path, "train.epochs=1"), progress=False)
    assert first["val/total"] > 0
    second = train(tiny_config(tmp_path, "train.epochs=2"), resume=True, progress=False)
    rows = log_rows(Path(second["run_dir"]))
    val_epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/total")})
    assert val_epochs == [0, 1]  # epoch 0 kept from the first run, not trained again
    state = torch.load(Path(second["run_dir"]) / "state" / "last.ckpt", weights_only=True)
    assert completed_epochs(state) == 2


def test_same_seed_same_weights(tmp_path):
    a = train(tiny_config(tmp_path / "a", "train.epochs=1", "data.synthetic_train=4"), progress=False)
    b = train(tiny_config(tmp_path / "b", "train.epochs=1", "data.synthetic_train=4"), progress=False)
    wa, _ = checkpoint.load(a["last"])
    wb, _ = checkpoint.load(b["last"])
    for (name, pa), pb in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=f"{name} differs between identical runs")


def test_init_starts_from_given_weights(tiny_run, tmp_path):
    # lr 0: Adam moves nothing, so the run's weights are exactly those it started from
    run = train(tiny_config(tmp_path, "train.epochs=1", "data.synthetic_train=4", "train.lr=0",
                            "train.warmup_steps=0", f"train.init={tiny_run['best']}"), progress=False)
    start, _ = checkpoint.load(tiny_run["best"])
    end, _ = checkpoint.load(run["last"])
    weights = {n: p for n, p in end.named_parameters()}
    for name, p in start.named_parameters():
        torch.testing.assert_close(weights[name], p, msg=f"{name} not taken from train.init")
    with pytest.raises(InputError, match="not a readable safetensors"):
        train(tiny_config(tmp_path / "b", "train.epochs=1", f"train.init={tmp_path / 'none.safetensors'}"),
              progress=False)


def test_predictor_takes_paths_and_arrays(tiny_run, images):
    from cobbnet.io.images import read_image

    predictor = Predictor(tiny_run["best"], precision="fp32")
    path = sorted((images / "data" / "training").glob("*.jpg"))[0]
    by_path = predictor.predict(path)
    by_array = predictor.predict(read_image(path), name=path.name)
    np.testing.assert_allclose(by_path.landmarks, by_array.landmarks)
    assert by_path.landmarks.shape == (17, 4, 2) and by_path.scores.shape == (17,)
    record = json.loads(json.dumps(by_path.as_dict()))
    assert record["schema_version"] == "1.0" and {"curves", "vertebrae", "challenge"} <= set(record)


def test_predict_cli_skips_a_corrupt_file_and_fails_at_the_end(tiny_run, images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((images / "data" / "training").glob("*.jpg"))[:2]:
        (folder / p.name.replace(" ", "_")).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(folder), "--checkpoint", tiny_run["best"], "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "Traceback" not in result.output
    assert len(list(out.glob("*.json"))) == 2 and not (out / "broken.json").exists()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 3 and [r["status"] for r in rows if r["input"].endswith("broken.jpg")] == ["rejected"]


def test_evaluate_cli_writes_metrics_table_and_plots(tiny_run, images, tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--data", str(images), "--checkpoint", tiny_run["best"],
                                 "--out", str(out), "--no-gate"])  # a barely trained model: score it all
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("smape", "smape_pt", "smape_mt", "smape_tl", "landmark_error_px", "mae_pt", "within_5deg", "fps"):
        assert key in metrics
    assert metrics["n_images"] == 3
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 3
    assert all(0 <= int(r["levels_wrong"]) <= 17 and r["level_shift"].lstrip("-").isdigit() for r in rows)
    assert all(r["level_margin"] == "" or float(r["level_margin"]) >= 0 for r in rows)
    for key in ("levels_in_doubt_pct", "misnamed_in_doubt_pct", "right_in_doubt_pct"):
        assert key in metrics
    assert 0 <= metrics["levels_in_doubt_pct"] <= 100
    assert {p.name for p in out.glob("*.png")} == {"pred_vs_true.png", "bland_altman.png", "error_by_level.png"}


def test_evaluate_reads_in_fp32_even_where_auto_would_pick_bf16(tiny_run, images, tmp_path, monkeypatch):
    monkeypatch.setenv("COBBNET_ASSUME_BF16", "1")  # a CPU with native bf16: auto means bf16 autocast
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--data", str(images), "--checkpoint", tiny_run["best"],
                                 "--out", str(out), "--no-gate"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["mode"] == "cpu fp32 onnxruntime"
    result = runner.invoke(app, ["evaluate", "--data", str(images), "--checkpoint", tiny_run["best"],
                                 "--out", str(tmp_path / "auto"), "--no-gate", "--precision", "auto"])
    assert result.exit_code == 0, result.output
    assert "bf16" in json.loads((tmp_path / "auto" / "metrics.json").read_text())["mode"]


def test_missing_checkpoint_is_a_one_line_error(images, tmp_path):
    result = runner.invoke(app, ["predict", str(images), "--checkpoint", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2
    assert "none" in result.output and len(result.output.strip().splitlines()) == 1


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: hrnet_w18\n  colour: red\n")
    with pytest.raises(InputError, match="bad.yaml.*colour"):
        load_config(bad)
    with pytest.raises(InputError, match="override"):
        load_config(SMOKE, ["epochs=3"])


@pytest.mark.slow
def test_ddp_trains_on_two_cpu_processes(tmp_path):
    """Two gloo processes; Lightning's DDP launcher re-runs this command in each."""
    cmd = [sys.executable, "-m", "cobbnet", "train", "--config", str(SMOKE), *TINY, "train.threads=1",
           "train.epochs=1", "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp",
           f"train.out_dir={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "smoke" / "fold-0" / "best.safetensors").is_file()
    log = done.stderr + done.stdout
    assert "MEMBER: 2/2" in log and "gloo" in log, log[-3000:]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    from cobbnet.training.demo import run_demo

    summary = run_demo(tmp_path / "demo", overrides=["train.epochs=1"])
    assert summary["n_val"] == 16 and np.isfinite(summary["smape"])  # evaluated without the gate
    assert Path(summary["report"]).is_file()
    # every predicted image has its JSON; an overlay exactly where the gate did not reject it
    results = sorted(Path(summary["overlays"]).rglob("*.json"))
    assert len(results) == 4
    for path in results:
        status = json.loads(path.read_text())["status"]
        assert path.with_suffix(".png").is_file() == (status != "rejected"), (path, status)
    assert len(summary["rejected"]) == sum(json.loads(p.read_text())["status"] == "rejected" for p in results)


def test_state_is_saved_after_every_epoch_not_only_at_the_end(tmp_path):
    """A run killed after epoch k (no chance to save on exit) resumes from epoch k."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel


    seen = []

    class Probe(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            path = tmp_path / "state" / "last.ckpt"
            seen.append(completed_epochs(torch.load(path, weights_only=True)) if path.is_file() else None)

    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[state_checkpoint(tmp_path / "state"), Probe()])
    trainer.fit(BoringModel())
    assert seen == [None, 1, 2]  # the state of every finished epoch is on disk before the next
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["last.ckpt"]


def test_level_doubts_count_marked_radiographs_by_whether_their_names_are_right():
    from cobbnet.infer.evaluate import level_doubts
    from cobbnet.io.synthetic import synth_sample
    from cobbnet.spine.chain import LEVEL_MARGIN

    true = np.stack([synth_sample(i, 0)[2] for i in range(4)])  # (4, 17, 4, 2)
    pred = true.copy()
    pred[1] = np.concatenate([true[1, 1:], true[1, -1:] + (true[1, -1] - true[1, -2])])  # one level down
    pred[3] = np.nan  # rejected: not counted
    margins = np.array([0.5 * LEVEL_MARGIN, 0.2, 2 * LEVEL_MARGIN, 0.0])
    out = level_doubts(pred, true, margins)
    assert out["levels_in_doubt_pct"] == pytest.approx(200 / 3)  # 2 of the 3 read
    assert out["misnamed_in_doubt_pct"] == 100.0  # the shifted one is marked
    assert out["right_in_doubt_pct"] == 50.0  # 1 of the 2 named right
