"""Predict on raw inputs (issue 11): the checkpoint records each task's preprocessing, so raw
uint8 images / image files of any size are classified as the task's own test inputs are."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import unforget
from unforget.cli import main
from unforget.config import RunConfig
from unforget.errors import InputError
from unforget.runner import load_benchmark, run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    cfg = RunConfig.model_validate({"method": "packnet", "benchmark": {"name": "digits", "n_tasks": 2},
                                    "model": {"name": "mlp", "width": 0.1}, "train": {"epochs": 2, "batch_size": 32}})
    run(cfg, out_dir=out, progress=False)
    return out, load_benchmark(cfg)


def test_raw_uint8_images_match_model_inputs(digits_run):
    out, bench = digits_run
    learner = unforget.load(out)
    task = bench.tasks[1]
    raw = task.test.x[:20]  # uint8 (N, 1, 8, 8), as stored
    want = learner.method.logits(task.transform(raw), 2).softmax(1).max(1)
    classes, probs = learner.predict_raw([r.numpy() for r in raw], 2)
    assert torch.equal(classes, want.indices) and torch.allclose(probs, want.values, rtol=0, atol=1e-6)
    pred = learner.predict_raw([r.numpy() for r in raw], 2)  # names, not only indices (issue 26, item 6)
    assert pred.names == [task.classes[i] for i in want.indices.tolist()] and torch.equal(pred.classes, classes)
    hwc = [r.numpy().transpose(1, 2, 0) for r in raw]  # channels-last is read as well
    assert torch.equal(learner.predict_raw(hwc, 2)[0], want.indices)


def test_predict_command_on_image_files(digits_run, tmp_path, capsys):
    from PIL import Image

    out, bench = digits_run
    task = bench.tasks[0]
    files = []
    for i in range(4):  # bigger RGB files: converted to grey and resized to 8x8 by the task's rule
        a = task.test.x[i, 0].numpy()
        Image.fromarray(a).resize((32, 32), Image.NEAREST).convert("RGB").save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    assert main(["predict", str(out), "--task", "1", "--json", *files]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["input"] for d in lines] == files
    assert all(set(d) == {"input", "index", "class", "probability"} for d in lines)
    helptext = _predict_help(capsys)
    assert all(f'"{k}"' in helptext for k in ("input", "index", "class", "probability"))
    assert all(d["class"] in task.classes and 0.0 < d["probability"] <= 1.0 for d in lines)
    acc = np.mean([task.classes.index(d["class"]) == int(task.test.y[i]) for i, d in enumerate(lines)])
    assert acc >= 0.5


@pytest.mark.parametrize("item, words", [
    (np.full((8, 8), 3.5, dtype=np.float32), "normalised already"),
    (np.zeros((8, 8, 2), dtype=np.uint8), "C in 1, 3, 4"),
    (np.zeros((8, 8), dtype=np.int64), "uint8"),
])
def test_inputs_the_task_was_not_trained_on_are_refused(digits_run, item, words):
    out, _ = digits_run
    with pytest.raises(InputError, match=words):
        unforget.load(out).predict_raw([item], 1)


def test_predict_refuses_a_file_that_is_not_an_image(digits_run, tmp_path, capsys):
    out, _ = digits_run
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["predict", str(out), "--task", "1", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "notes.png" in err and len(err.strip().splitlines()) == 1


def test_learn_a_task_of_bigger_rgb_images_into_a_grey_8x8_model(digits_run, tmp_path):
    """A new task's images may differ in size and channels from the run's: learn brings them to
    the model's input shape (grey 8x8 here) and records that for serving raw files."""
    import shutil

    from PIL import Image

    from unforget.lifelong import learn_task

    out, bench = digits_run
    run_copy = tmp_path / "run"
    shutil.copytree(out, run_copy)
    src = bench.tasks[0]
    folder = tmp_path / "big-rgb"
    for split, x, y in (("train", src.train.x, src.train.y), ("test", src.test.x, src.test.y)):
        for i in range(min(60, len(y))):
            d = folder / split / f"digit{int(y[i])}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i, 0].numpy()).resize((24, 20), Image.BILINEAR).convert("RGB").save(d / f"{i}.png")
    res = learn_task(run_copy, folder, progress=False, say=lambda *_: None)
    learner = unforget.load(run_copy)
    assert learner.task_ids == [1, 2, 3] and res["accuracy_matrix"][-1][:2] == res["accuracy_matrix"][-2]
    prep = learner.tasks[2]["preprocessing"]
    assert prep["channels"] == 1 and prep["size"] == [8, 8]
    files = sorted((folder / "test").rglob("*.png"))[:3]
    classes, _ = learner.predict_raw([str(f) for f in files], 3)
    assert classes.shape == (3,)


def test_predict_command_on_an_npz_of_raw_images(digits_run, tmp_path, capsys):
    out, bench = digits_run
    task = bench.tasks[1]
    np.savez(tmp_path / "batch.npz", x=task.test.x[:5, 0].numpy())  # (N, 8, 8) uint8
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    assert main(["predict", str(out), "--task", "2", "--json", str(tmp_path / "batch.npz")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    learner = unforget.load(out)
    want = learner.method.logits(task.transform(task.test.x[:5]), 2).argmax(1).tolist()
    assert [d["index"] for d in lines] == want and lines[0]["input"].endswith("batch.npz[0]")
    assert main(["predict", str(out), "--task", "2", str(tmp_path / "nox.npz")]) == 2
    err = capsys.readouterr().err
    assert "has no array x (it holds y)" in err and "cannot read" not in err


def _predict_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    return " ".join(capsys.readouterr().out.split())
