"""Fuzz-style table of bad inputs (issue 10, item 7): every entry point answers with one clear line
and never a traceback. The command line exits 2 with ``unforget: error: ...`` on stderr (130 and
one line on Ctrl-C); the Python API raises a project error class (``unforget.errors``) whose
message is one line. Inputs that can be taken safely (NumPy arrays, float64 / integer batches, a
0-d integer tensor as task id) are taken, and give what the float32 tensor gives."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unforget
from synthetic import gaussian_benchmark
from unforget import cli
from unforget.cli import main
from unforget.config import RunConfig
from unforget.errors import ConfigError, InputError, RunFolderError, UnforgetError, UnknownTaskError
from unforget.runner import run

ROOT = Path(__file__).resolve().parents[1]
DIM = 12
MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 2-task run (packnet, a tiny MLP, Gaussian blobs): results.json and checkpoint."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    cfg = RunConfig.model_validate({"method": "packnet", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 1, "batch_size": 16}})
    run(cfg, benchmark=gaussian_benchmark(2, 3, DIM, 48, seed=3), out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def served(tiny_run):
    return unforget.load(tiny_run)


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    cap = capsys.readouterr()
    assert code == 2, (code, cap.err)
    err = cap.err.strip()
    assert err.startswith("unforget: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _assert_one_line(e: BaseException) -> None:
    msg = str(e)
    assert msg and "\n" not in msg, msg


# ============================================================== unforget report: damaged files
def _results(tiny_run) -> str:
    return (tiny_run / "results.json").read_text()


def _percent(text: str) -> str:
    d = json.loads(text)
    d["accuracy_matrix"][1][0] = 95.0
    return json.dumps(d)


def _not_triangular(text: str) -> str:
    d = json.loads(text)
    d["accuracy_matrix"][0].append(0.5)
    return json.dumps(d)


def _without(key: str):
    def f(text: str) -> str:
        d = json.loads(text)
        del d[key]
        return json.dumps(d)
    return f


def _string_where_number(text: str) -> str:
    d = json.loads(text)
    d["tasks"][0]["model_size_bytes"] = "big"
    return json.dumps(d)


REPORT_CASES = [
    # (file, how the good results.json is damaged, words of the message)
    ("results.json", lambda t: "", "is empty"),
    ("results.json", lambda t: t[: len(t) // 2], "not JSON"),
    ("results.json", lambda t: t[:1], "not JSON"),
    ("results.json", lambda t: "accuracy: high\n", "not JSON"),
    ("results.json", lambda t: b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8"),
    ("results.json", lambda t: "[1, 2, 3]", "not a JSON mapping"),
    ("results.json", lambda t: "null", "not a JSON mapping"),
    ("results.json", lambda t: "[" * 100_000, "damaged"),
    ("results.json", _percent, "accuracy_matrix.1.0"),
    ("results.json", _not_triangular, "row 1 of accuracy_matrix"),
    ("results.json", _without("config"), "'config'"),
    ("results.json", _without("accuracy_matrix"), "'accuracy_matrix'"),
    ("results.json", _without("tasks"), "'tasks'"),
    ("results.json", _string_where_number, "tasks.0.model_size_bytes"),
    ("compare.json", lambda t: "", "is empty"),
    ("compare.json", lambda t: '{"benchmark": "toy", "meth', "not JSON"),
    ("compare.json", lambda t: "not json at all", "not JSON"),
    ("compare.json", lambda t: '["a"]', "not a JSON mapping"),
    ("compare.json", lambda t: '{"methods": 5}', "'methods'"),
    ("compare.json", lambda t: b"\xff\x00\x01", "not UTF-8"),
]


@pytest.mark.parametrize("name, damage, words", REPORT_CASES)
def test_report_on_damaged_file(capsys, tmp_path, tiny_run, name, damage, words):
    folder = tmp_path / "cmp"
    (folder / "a").mkdir(parents=True)
    good = _results(tiny_run)
    (folder / "a" / "results.json").write_text(good)
    if name == "compare.json":
        (folder / "compare.json").write_text(json.dumps({"benchmark": "toy", "methods": ["a"]}))
        assert main(["report", str(folder), "--no-plots"]) == 0  # the undamaged folder reports
        capsys.readouterr()
    bad = damage(good)
    target = folder / name if name == "compare.json" else folder / "a" / name
    target.write_bytes(bad) if isinstance(bad, bytes) else target.write_text(bad)
    err = _one_line_error(capsys, ["report", str(folder), "--no-plots"])
    assert str(target) in err and "damaged" in err and words in err, err
    assert ("rerun `unforget report`" if name == "compare.json" else "rerun `unforget compare`") in err


def test_report_advice_keeps_a_checkpoint(capsys, tmp_path, tiny_run):
    """With a checkpoint beside the damaged results.json, the advice does not delete it."""
    folder = tmp_path / "cmp"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "results.json").write_text("")
    (folder / "a" / "checkpoint.safetensors").write_bytes((tiny_run / "checkpoint.safetensors").read_bytes())
    err = _one_line_error(capsys, ["report", str(folder), "--no-plots"])
    assert "resumes from the checkpoint" in err and f"delete {folder / 'a'} " not in err


# ============================================================== unforget run: bad options
def _write(path: Path, content) -> Path:
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


RUN_CASES = [
    # (id, extra argv, config file content or None, words of the message)
    ("seed-too-large", ["--seed", str(2**64)], None, "'seed'"),
    ("seed-huge", ["--seed", "9" * 40], None, "'seed'"),
    ("seed-negative", ["--seed", "-1"], None, "'seed'"),
    ("yaml-binary", [], b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x00", "not a text file"),
    ("yaml-nul", [], "seed: 1\n\x00\n", "not a text file"),
    ("yaml-duplicate-top", [], "seed: 1\nseed: 2\n", "'seed' is given twice, on lines 1 and 2"),
    ("yaml-duplicate-nested", [], "train:\n  epochs: 3\n  lr: 0.1\n  epochs: 4\n", "'epochs' is given twice"),
    ("yaml-invalid", [], "train: [1\n", "not valid YAML"),
    ("yaml-not-mapping", [], "- 1\n- 2\n", "must hold a mapping"),
    ("milestone-beyond-epochs", ["--epochs", "3"], "train:\n  lr_milestones: [5]\n", "'train.lr_milestones'"),
    ("milestone-at-epochs", ["--epochs", "3"], "train:\n  lr_milestones: [3]\n", "must lie in 1..2"),
    ("milestone-negative", [], "train:\n  lr_milestones: [-1]\n", "'train.lr_milestones'"),
    ("milestone-zero", [], "train:\n  lr_milestones: [0, 1]\n", "'train.lr_milestones'"),
    ("milestone-not-increasing", [], "train:\n  epochs: 10\n  lr_milestones: [5, 2]\n", "strictly increasing"),
    ("milestone-repeated", [], "train:\n  epochs: 10\n  lr_milestones: [5, 5]\n", "strictly increasing"),
    ("milestone-one-epoch", ["--epochs", "1"], "train:\n  lr_milestones: [1]\n", "must be []"),
    ("milestone-preset-paper", ["--benchmark", "split-cifar10", "--preset", "paper", "--epochs", "2"], None,
     "lr_milestones"),
    ("device-unknown", ["--device", "xla"], None, "unknown device 'xla'"),
    ("device-bad-index", ["--device", "cuda:x"], None, "unknown device 'cuda:x'"),
]


@pytest.mark.parametrize("argv, content, words", [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_run_bad_option(capsys, tmp_path, argv, content, words):
    extra = [] if content is None else ["--config", str(_write(tmp_path / "c.yaml", content))]
    out = tmp_path / "out"
    err = _one_line_error(capsys, ["run", "-q", *argv, *extra, "--out", str(out)])
    assert words in err, err
    assert not out.exists()  # refused while resolving the configuration, before the folder


@pytest.mark.parametrize("device, present, words", [("mps", MPS, "no MPS device"),
                                                    ("cuda", torch.cuda.is_available(), "no CUDA device")])
def test_run_absent_device(capsys, tmp_path, device, present, words):
    if present:
        pytest.skip(f"{device} is present here")
    err = _one_line_error(capsys, ["run", "-q", "--device", device, "--out", str(tmp_path)])
    assert words in err, err
    assert not (tmp_path / "checkpoint.safetensors").exists()


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 6), dtype=np.uint8)).save(path)


def test_image_folder_test_split_missing_a_class(capsys, tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        for c in ("a", "b", "c"):
            _png(root / "t1" / "train" / c / f"{i}.png", i)
    for c in ("a", "b"):  # test/ lacks class c
        _png(root / "t1" / "test" / c / "0.png", 9)
    err = _one_line_error(capsys, ["run", "-q", "--benchmark", "image-folder", "--data-root", str(root),
                                   "--out", str(tmp_path / "out")])
    assert "lacks class folder(s) c" in err and str(root / "t1" / "test") in err, err


# ============================================================== Ctrl-C
STOP_AT_IMPORT = """
import sys
class Stop:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, Stop())
from unforget.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("module, argv, words", [
    ("torch", ["list"], "unforget: interrupted"),
    ("pydantic", ["list"], "unforget: interrupted"),
    ("torch", ["run", "-q", "--out", "{out}"], "no checkpoint in {out} to resume from"),
])
def test_ctrl_c_during_imports_exits_quietly(tmp_path, module, argv, words):
    """A KeyboardInterrupt raised while the command line imports PyTorch (or pydantic), as a
    Ctrl-C there would: exit status 130, one line, no traceback (the console script runs
    exactly `from unforget.cli import main; sys.exit(main())`)."""
    out = str(tmp_path / "out")
    argv = [a.format(out=out) for a in argv]
    p = subprocess.run([sys.executable, "-c", STOP_AT_IMPORT.format(module=module), *argv], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    err = p.stderr.strip()
    assert p.returncode == 130, (p.returncode, err)
    assert "\n" not in err and "Traceback" not in err and words.format(out=out) in err, err
    assert "--resume" not in err


def _interrupt(*a, **k):
    raise KeyboardInterrupt


@pytest.mark.parametrize("checkpoint", [False, True])
def test_ctrl_c_advises_resume_only_with_a_checkpoint(capsys, tmp_path, monkeypatch, checkpoint):
    import unforget.runner

    out = tmp_path / "out"
    out.mkdir()
    if checkpoint:
        (out / cli.CHECKPOINT).write_bytes(b"a checkpoint of an earlier task")
    monkeypatch.setattr(unforget.runner, "run", _interrupt)
    code = main(["run", "-q", "--epochs", "1", "--out", str(out), *(["--resume"] if checkpoint else [])])
    err = capsys.readouterr().err.strip()
    assert code == 130 and "\n" not in err and err.startswith("unforget: interrupted"), err
    assert ("--resume" in err) == checkpoint, err


def test_ctrl_c_in_compare_advises_rerun_only_with_a_checkpoint(capsys, tmp_path, monkeypatch):
    import unforget.compare

    monkeypatch.setattr(unforget.compare, "compare", _interrupt)
    argv = ["compare", "-q", "--methods", "packnet", "--out", str(tmp_path)]
    assert main(argv) == 130
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "packnet").mkdir()
    (tmp_path / "packnet" / cli.CHECKPOINT).write_bytes(b"x")
    assert main(argv) == 130
    assert "rerun the same command to continue" in capsys.readouterr().err


def test_cli_checkpoint_name_is_the_checkpoint_modules():
    from unforget.checkpoint import CHECKPOINT

    assert cli.CHECKPOINT == CHECKPOINT


# ============================================================== Python API: unforget.run / unforget.load
@pytest.mark.parametrize("kwargs, error, words", [
    ({"config": 42}, ConfigError, "config must be a mapping"),
    ({"config": 4.2}, ConfigError, "config must be a mapping"),
    ({"config": [("seed", 1)]}, ConfigError, "config must be a mapping"),
    ({"config": b"seed: 1"}, ConfigError, "config must be a mapping"),
    ({"benchmark": 42}, ConfigError, "benchmark must be a registered name"),
    ({"benchmark": None}, ConfigError, "benchmark must be a registered name"),
    ({"config": {"seed": 2**64}}, ConfigError, "'seed'"),
    ({"config": {"seed": -5}}, ConfigError, "'seed'"),
    ({"config": {"train": {"epochs": 4, "lr_milestones": [2, 9]}}}, ConfigError, "lr_milestones"),
    ({"config": {"device": "tpu"}}, ConfigError, "unknown device 'tpu'"),
    ({"config": "missing.yaml"}, ConfigError, "config file not found"),
])
def test_api_run_rejects(tmp_path, kwargs, error, words):
    with pytest.raises(error) as e:
        unforget.run(**{"benchmark": "digits", "method": "packnet", **kwargs}, out=tmp_path / "out", progress=False)
    _assert_one_line(e.value)
    assert words in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device, words", [
    ("mps", "no MPS device"), ("cuda", "no CUDA device"), ("cuda:0", "no CUDA device"),
    ("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device"), ("", "unknown device"),
    (5, "device must be a name"), (None, "device must be a name"),
])
def test_api_load_on_a_bad_device_blames_the_device_not_the_file(tiny_run, device, words):
    present = {"mps": MPS, "cuda": torch.cuda.is_available(), "cuda:0": torch.cuda.is_available()}
    if present.get(device, False):
        pytest.skip(f"{device} is present here")
    with pytest.raises(ConfigError) as e:
        unforget.load(tiny_run, device=device)
    _assert_one_line(e.value)
    assert words in str(e.value) and "checkpoint" not in str(e.value).lower()


def test_api_load_accepts_a_torch_device(tiny_run):
    assert unforget.load(tiny_run, device=torch.device("cpu")).task_ids == [1, 2]


# ============================================================== Python API: model(x, task=...)
X = torch.randn(5, DIM, generator=torch.Generator().manual_seed(0))

BAD_X = [
    ("wrong-width", torch.randn(5, DIM + 1), "shape (5, 13)"),
    ("one-input", torch.randn(DIM), "for a single input pass x[None]"),
    ("image-shaped", torch.randn(5, 3, 4), "(N, 12)"),
    ("scalar", torch.tensor(1.0), "shape ()"),
    ("complex", X.to(torch.complex64), "dtype torch.complex64"),
    ("bool", X > 0, "dtype torch.bool"),
    ("numpy-object", np.array([[object()] * DIM] * 2, dtype=object), "dtype object"),
    ("numpy-str", np.array([["a"] * DIM] * 2), "NumPy array of dtype <U1"),
    ("numpy-bool", np.ones((2, DIM), dtype=bool), "NumPy array of dtype bool"),
    ("numpy-complex", np.ones((2, DIM), dtype=np.complex64), "NumPy array of dtype complex64"),
    ("numpy-wrong-shape", np.ones((2, DIM + 1), dtype=np.float32), "shape (2, 13)"),
    ("list", X.tolist(), "got list"),
    ("string", "an image", "got str"),
    ("none", None, "got NoneType"),
]


@pytest.mark.parametrize("x, words", [c[1:] for c in BAD_X], ids=[c[0] for c in BAD_X])
def test_model_rejects_input(served, x, words):
    for call in (served, served.predict):
        with pytest.raises(InputError) as e:
            call(x, task=1)
        _assert_one_line(e.value)
        assert words in str(e.value), str(e.value)


BAD_TASK = [
    ("bool-true", True, InputError, "got the bool True"),
    ("bool-false", False, InputError, "got the bool False"),
    ("numpy-bool", np.bool_(True), InputError, "bool"),
    ("float", 1.0, InputError, "got float 1.0"),
    ("string", "1", InputError, "got str '1'"),
    ("none", None, InputError, "needs the task id"),  # None asks for task-id inference (SupSup only)
    ("float-tensor", torch.tensor(1.0), InputError, "dtype torch.float32"),
    ("bool-tensor", torch.tensor(True), InputError, "dtype torch.bool"),
    ("1d-tensor", torch.tensor([1]), InputError, "shape (1,)"),
    ("unknown", 3, UnknownTaskError, "task 3 was not learned; learned tasks: [1, 2]"),
    ("zero", 0, UnknownTaskError, "task 0 was not learned"),
    ("unknown-tensor", torch.tensor(7), UnknownTaskError, "task 7 was not learned"),
]


@pytest.mark.parametrize("task, error, words", [c[1:] for c in BAD_TASK], ids=[c[0] for c in BAD_TASK])
def test_model_rejects_task(served, task, error, words):
    with pytest.raises(error) as e:
        served(X, task=task)
    _assert_one_line(e.value)
    assert words in str(e.value), str(e.value)
    assert isinstance(e.value, UnforgetError)


def test_unknown_task_is_still_a_key_error(served):
    with pytest.raises(KeyError, match="^task 3 was not learned"):
        served(X, task=3)


ACCEPTED = [
    ("float64", lambda x: x.double(), 1),
    ("float16", lambda x: x.half(), 1),
    ("numpy-float32", lambda x: x.numpy(), 1),
    ("numpy-float64", lambda x: x.numpy().astype(np.float64), 1),
    ("numpy-negative-strides", lambda x: x.numpy()[::-1].copy()[::-1], 1),
    ("task-0d-int-tensor", lambda x: x, torch.tensor(2)),
    ("task-numpy-int", lambda x: x, np.int64(2)),
]


@pytest.mark.parametrize("convert, task", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_model_takes_what_can_be_cast_safely(served, convert, task):
    x = X.half().float()  # values that every converted dtype holds exactly
    assert torch.equal(served(convert(x), task=task), served(x, task=int(task)))


def test_model_casts_integer_batches(served):
    xi = torch.randint(0, 256, (4, DIM), generator=torch.Generator().manual_seed(1))
    expected = served(xi.float(), task=1)
    for x in (xi.to(torch.uint8), xi, xi.to(torch.int32), xi.numpy().astype(np.uint8), xi.numpy()):
        assert torch.equal(served(x, task=1), expected)
    assert served.predict(xi.to(torch.uint8), task=1).dtype == torch.int64


def test_report_on_one_run_folder_rebuilds_its_report_and_figures(capsys, tmp_path, tiny_run):
    """`unforget report RUN` on a run's own folder (issue 29 item 5, issue 26 item 4)."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    report = (folder / "report.md").read_text()
    assert report.startswith("## packnet on toy") and "Accuracy matrix R[i, j]" in report
    assert "![heatmap_packnet](heatmap_packnet.png)" in report and (folder / "heatmap_packnet.png").is_file()
    assert (folder / "accuracy_over_tasks.png").is_file()
    capsys.readouterr()
    err = _one_line_error(capsys, ["report", str(tmp_path / "empty-does-not-exist")])
    assert "no results.json in" in err and "`unforget run` or `unforget compare`" in err


def test_every_command_words_a_missing_model_alike(capsys, tmp_path):
    """predict, export and learn on a folder without a checkpoint give the same line (issue 29)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    errs = {_one_line_error(capsys, argv) for argv in (["predict", str(empty), "--task", "1", "a.png"],
                                                       ["export", str(empty), "--task", "1", "--out", str(tmp_path / "x.pt")],
                                                       ["learn", str(empty), "--data", str(tmp_path / "t.npz")])}
    assert errs == {f"unforget: error: {empty} holds no trained model (no checkpoint.safetensors); train one with "
                    f"`unforget run --out {empty}` first, or give the folder of a run"}


@pytest.mark.parametrize("args, config, hint", [
    (["--method", "cgp"], None, "did you mean 'cpg'?"),
    (["--benchmark", "image_folder"], None, "did you mean 'image-folder'?"),
    ([], "methods:\n  cpg:\n    goal_tolerence: 0.1\n", "did you mean 'goal_tolerance'?"),
    ([], "train:\n  epoch: 2\n", "did you mean 'epochs'?"),
])
def test_a_misspelt_name_gets_the_closest_known_one(tmp_path, capsys, args, config, hint):
    """Issue 26, item 8: a typo in a method, benchmark or configuration key suggests the name."""
    from unforget.cli import main as cli_main

    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        args = [*args, "--config", str(tmp_path / "c.yaml")]
    assert cli_main(["run", "-q", *args, "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err.strip()
    assert hint in err and len(err.splitlines()) == 1, err
    if config is not None:
        assert "c.yaml" in err, err  # the file the mistake is in, methods sections too


def _image_tasks(root, tasks=("t1", "t2")):
    from test_data_custom import make_tree

    spec = {f"{t}/{split}/{c}": (8 if split == "train" else 3) for t in tasks for split in ("train", "test")
            for c in ("a", "b")}
    return make_tree(root, spec)


def test_a_data_root_of_task_folders_is_recognised_without_benchmark(tmp_path, capsys):
    """Issue 26, item 1: `run --data-root myimages` (no --benchmark) trains on the images, not
    silently on the embedded digits."""
    from unforget.cli import main as cli_main

    data = _image_tasks(tmp_path / "myimages")
    assert cli_main(["run", "-q", "--epochs", "1", "--method", "scratch", "--data-root", str(data),
                     "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "--benchmark image-folder" in out
    rec = json.loads((tmp_path / "r" / "results.json").read_text())
    assert rec["benchmark"] == "image-folder" and len(rec["tasks"]) == 2


def test_a_data_root_without_recognisable_data_and_a_single_task_folder_are_refused(tmp_path, capsys):
    """Issue 26, items 1 and 2: one line naming what to do, exit code 2, nothing trained."""
    from unforget.cli import main as cli_main

    (tmp_path / "empty").mkdir()
    assert cli_main(["run", "-q", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "r1")]) != 0
    err = capsys.readouterr().err.strip()
    assert "without --benchmark" in err and len(err.splitlines()) == 1
    data = _image_tasks(tmp_path / "myimages")
    for extra in ([], ["--benchmark", "image-folder"]):
        assert cli_main(["run", "-q", *extra, "--data-root", str(data / "t1"), "--out", str(tmp_path / "r2")]) != 0
        err = capsys.readouterr().err.strip()
        assert "it is one task" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r2" / "results.json").exists()


def test_predict_on_a_folder_or_a_missing_file_says_what_it_is(tmp_path, capsys):
    """Issue 26, item 8: not "Is a directory ...; delete or replace the file"."""
    from unforget.cli import main as cli_main

    run = tmp_path / "r"
    assert cli_main(["run", "-q", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    for target, words in ((tmp_path, "is a folder; pass its image files"), (tmp_path / "no.png", "does not exist")):
        assert cli_main(["predict", str(run), "--task", "1", str(target)]) != 0
        err = capsys.readouterr().err.strip()
        assert words in err and "delete or replace" not in err and len(err.splitlines()) == 1, err
