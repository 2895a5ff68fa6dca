"""Command line: bad input gives one actionable line on stderr and a non-zero exit."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from unforget.cli import main


def _err(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("unforget: error:") and "\n" not in err, err
    return err


def test_unknown_benchmark(capsys, tmp_path):
    err = _err(capsys, ["run", "-q", "--benchmark", "nope", "--out", str(tmp_path)])
    assert "unknown benchmark 'nope'" in err and "split-cifar10" in err


def test_unknown_method(capsys, tmp_path):
    err = _err(capsys, ["run", "-q", "--method", "nope", "--out", str(tmp_path)])
    assert "unknown method 'nope'" in err and "cpg" in err


def test_preset_the_benchmark_lacks_lists_those_it_has(capsys, tmp_path):
    err = _err(capsys, ["run", "-q", "--benchmark", "digits", "--preset", "paper", "--out", str(tmp_path)])
    assert "no 'paper' preset" in err and "it has: cpu" in err
    err = _err(capsys, ["run", "-q", "--benchmark", "permuted-mnist", "--preset", "full", "--out", str(tmp_path)])
    assert "it has: cpu, paper" in err


def test_missing_data_folder(capsys, tmp_path):
    err = _err(capsys, ["run", "-q", "--benchmark", "split-cifar10", "--data-root", str(tmp_path / "nothing"),
                        "--out", str(tmp_path / "o")])
    assert str(tmp_path / "nothing") in err


def test_truncated_data_file(capsys, tmp_path, shared_data_root):
    src = shared_data_root / "mnist" / "MNIST" / "raw"
    dst = tmp_path / "mnist" / "MNIST" / "raw"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    data = (dst / "train-images-idx3-ubyte.gz").read_bytes()
    (dst / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 3])
    err = _err(capsys, ["run", "-q", "--benchmark", "split-mnist", "--data-root", str(tmp_path), "--out",
                        str(tmp_path / "o")])
    assert "train-images-idx3-ubyte" in err


@pytest.mark.parametrize("flag,value", [("--width", "0"), ("--width", "-1"), ("--width", "100"),
                                        ("--epochs", "0"), ("--epochs", "-3"), ("--batch-size", "1")])
def test_out_of_range(capsys, tmp_path, flag, value):
    err = _err(capsys, ["run", "-q", flag, value, "--out", str(tmp_path)])
    assert flag.strip("-").replace("-", "_") in err


def test_config_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    err = _err(capsys, ["run", "-q", "--config", str(cfg), "--out", str(tmp_path)])
    assert "unknown key 'train.learning_rate'" in err and str(cfg) in err


def test_config_unknown_method_option(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("methods:\n  cpg:\n    prune_ratoi: 0.5\n")
    err = _err(capsys, ["run", "-q", "--config", str(cfg), "--out", str(tmp_path)])
    assert "prune_ratoi" in err


def test_missing_config_file(capsys, tmp_path):
    assert "config file not found" in _err(capsys, ["run", "-q", "--config", str(tmp_path / "x.yaml")])


def test_cuda_absent_is_clear(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-CUDA error cannot be shown here")
    assert "no CUDA device" in _err(capsys, ["run", "-q", "--device", "cuda", "--out", str(tmp_path)])


def test_default_run_on_embedded_digits(capsys, tmp_path):
    """`unforget run` with no benchmark runs the embedded default and writes results."""
    assert main(["run", "-q", "--epochs", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Accuracy matrix" in out and "BWT: +0.00" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["benchmark"] == "digits" and res["method"] == "cpg" and len(res["accuracy_matrix"]) == 5
    assert res["bwt"] == 0.0 and res["average_accuracy"] > 0.8


def test_help_and_list():
    out = subprocess.run([sys.executable, "-m", "unforget.cli", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--benchmark" in out and "accuracy matrix" in out
    out = subprocess.run([sys.executable, "-m", "unforget.cli", "list"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("split-cifar100", "permuted-mnist", "cpg", "packnet", "piggyback", "vgg16_bn", "resnet18"):
        assert name in out


def test_run_draws_its_figures_unless_no_plots(tmp_path, capsys):
    """`unforget run` writes the run's figures beside report.md and links them (issue 26, item 4);
    `--no-plots` leaves tables only."""
    drawn, bare = tmp_path / "drawn", tmp_path / "bare"
    assert main(["run", "-q", "--method", "scratch", "--epochs", "1", "--out", str(drawn)]) == 0
    report = (drawn / "report.md").read_text()
    for name in ("accuracy_over_tasks", "heatmap_scratch", "model_size"):
        assert (drawn / f"{name}.png").is_file() and f"![{name}]({name}.png)" in report
    assert main(["run", "-q", "--method", "scratch", "--epochs", "1", "--no-plots", "--out", str(bare)]) == 0
    assert not list(bare.glob("*.png")) and "![" not in (bare / "report.md").read_text()
    assert "figures beside it" in capsys.readouterr().out
