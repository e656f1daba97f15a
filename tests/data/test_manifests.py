"""Manifests read the seeds' layouts as they are; every CSV problem is one line naming file and row."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import seed_layouts as layouts
import torch

from accel.data.manifests import MAX_CLASS_ID, CsvOptions, ManifestError, csv_manifest, drop_missing, skipped_summary
from accel.data.splits import load_splits
from accel.io.diagnose import explain_skip


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def one_line_error(fn, *args, **kwargs) -> str:
    """The one-line message, with the option it concerns (if any) named as a script's flag."""
    with pytest.raises(ManifestError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and not (e.value.option and f"--{e.value.option}" in msg)  # no flag names
    return e.value.naming(f"--{e.value.option}") if e.value.option else msg


# --------------------------------------------------------------------------- CSV columns and labels
@pytest.mark.parametrize("header", ["path,label", "filename,label", "file,class", "video,target",
                                    "clip,label", "sequence,label", "Clip_Path,Label"])
def test_columns_found_by_common_names(tmp_path, header):
    f = write(tmp_path / "m.csv", f"{header}\na.mp4,x\nb.mp4,y\n")
    m = csv_manifest(f)
    assert [Path(i.path).name for i in m.items] == ["a.mp4", "b.mp4"] and m.classes == ["x", "y"]


def test_columns_named_and_video_root(tmp_path):
    f = write(tmp_path / "meta" / "m.csv", "id,name,verdict\n1,a.mp4,REAL\n2,b.mp4,FAKE\n")
    err = one_line_error(csv_manifest, f)
    assert "m.csv" in err and "no path column" in err and "--path_column" in err and "verdict" in err
    m = csv_manifest(f, path_column="name", label_column="verdict", root=tmp_path / "videos")
    assert m.items[0].path == str(tmp_path / "videos" / "a.mp4") and m.classes == ["FAKE", "REAL"]
    err = one_line_error(csv_manifest, f, path_column="nope", label_column="verdict")
    assert "'nope'" in err and "--path_column" in err


def test_sequence_names_resolve_under_sequences(tmp_path):
    (tmp_path / "train" / "sequences" / "seq_00001").mkdir(parents=True)
    f = write(tmp_path / "train" / "train.csv", "sequence,label\nseq_00001,1\nseq_00002,0\n")
    m = csv_manifest(f)
    assert m.items[0].path == str(tmp_path / "train" / "sequences" / "seq_00001")
    assert m.classes == ["0", "1"] and m.labels == [1, 0]


@pytest.mark.parametrize("body, needle", [
    ("a.mp4,\n", "no 'label' value"),
    ("a.mp4\n", "no 'label' value"),
    (",x\n", "no 'path' value"),
    ("a.mp4,--1\n", "'--1' is neither a class name nor a class id"),
    ("a.mp4,-1\n", "'-1' is neither"),
    ("a.mp4,1.5\n", "'1.5' is neither"),
])
def test_bad_rows_name_file_and_row(tmp_path, body, needle):
    f = write(tmp_path / "m.csv", "path,label\nok.mp4,0\n" + body)
    err = one_line_error(csv_manifest, f)
    assert err.startswith(f"{f}:3: ") and needle in err


def test_non_utf8_csv_names_the_line(tmp_path):
    f = write(tmp_path / "m.csv", "path,label\na.mp4,0\ncaf\xe9.mp4,1\n".encode("latin-1"))
    err = one_line_error(csv_manifest, f)
    assert err.startswith(f"{f}:3: not UTF-8") and "0xe9" in err


def test_utf8_bom_and_float_ids(tmp_path):
    f = write(tmp_path / "m.csv", "\ufeffpath,label\na.mp4,1.0\nb.mp4,0\n".encode("utf-8"))
    m = csv_manifest(f)
    assert m.classes == ["0", "1"] and m.labels == [1, 0]


def test_huge_integer_labels_are_names(tmp_path):
    f = write(tmp_path / "m.csv", f"path,label\na.mp4,10000000\nb.mp4,{MAX_CLASS_ID - 1}\n")
    m = csv_manifest(f)
    assert m.classes == [str(MAX_CLASS_ID - 1), "10000000"] and m.labels == [1, 0]


def test_label_not_in_training_classes(tmp_path):
    f = write(tmp_path / "val.csv", "path,label\na.mp4,cat\nb.mp4,emu\n")
    err = one_line_error(csv_manifest, f, classes=["cat", "dog"])
    assert err.startswith(f"{f}:3: label 'emu' is not one of the classes")


def test_50k_rows_50k_labels_fast(tmp_path):
    f = write(tmp_path / "big.csv", "path,label\n" + "".join(f"v{i}.mp4,c{i}\n" for i in range(50_000)))
    t0 = time.perf_counter()
    m = csv_manifest(f)
    assert time.perf_counter() - t0 < 10  # a list search per row took 29 s
    assert len(m.classes) == 50_000 and m.labels[123] == m.classes.index("c123")


# --------------------------------------------------------------------------- layouts
def test_seed_layouts_are_read_as_they_are(tmp_path):
    cases = {
        "000": (layouts.seed000_laryngoscopy(tmp_path / "s0", {"train": 2, "val": 1, "test": 1}), {},
                ["non_referral", "referral"], (4, 2, 2)),
        "001": (layouts.seed001_laparoscopy(tmp_path / "s1", classes=2), {},
                ["AbdominalEntry", "UseClipper"], (8, 4, 4)),
        "003": (layouts.seed003_sequences(tmp_path / "s3"), {}, ["0", "1"], (8, 4, 4)),
    }
    s2 = layouts.seed002_deepfake(tmp_path / "s2")
    cases["002"] = (s2 / "Data" / "Gobal_metadata.csv", {"video_root": str(s2 / "videos")},
                    ["FAKE", "REAL"], None)
    for seed, (data, opts, classes, sizes) in cases.items():
        s = load_splits(data, options=CsvOptions(**opts))
        assert s.classes == classes, seed
        if sizes:
            assert (len(s.train), len(s.val), len(s.test)) == sizes, seed
        assert all(Path(i.path).exists() for m in (s.train, s.val) for i in m.items), seed


def test_frame_folder_splits_seed004(tmp_path):
    data = layouts.seed004_frame_folders(tmp_path / "d")
    s = load_splits(data)
    assert (len(s.train), len(s.val), len(s.test)) == (8, 4, 4)
    assert Path(s.train.items[0].path).is_dir()


def test_per_split_csvs_and_validation_folder(tmp_path):
    for split in ("train", "validation", "test"):
        write(tmp_path / f"{split}.csv", "path,label\na.mp4,x\nb.mp4,y\n")
    s = load_splits(tmp_path)
    assert s.train.source.endswith("train.csv") and s.val.source.endswith("validation.csv")
    assert not [n for n in s.notes if "held out" in n]


def test_unreadable_folder_says_what_it_expected_and_found(tmp_path):
    write(tmp_path / "clips" / "a.mp4", b"x")
    write(tmp_path / "labels.txt", "a 1\n")
    err = one_line_error(load_splits, tmp_path)
    assert "expected train/" in err and "train.csv" in err and "found folders [clips]" in err
    assert "labels.txt" in err


def test_sequences_without_csv(tmp_path):
    (tmp_path / "train" / "sequences" / "seq_1").mkdir(parents=True)
    err = one_line_error(load_splits, tmp_path)
    assert "sequences/" in err and "no CSV" in err and "train.csv" in err


def test_near_miss_split_folder_is_noted(tmp_path):
    for split in ("train", "validatioon"):
        for c in ("a", "b"):
            for v in ("v1.mp4", "v2.mp4"):
                write(tmp_path / split / c / v, b"x")
    s = load_splits(tmp_path)
    assert any("validatioon" in n and "not read as a split" in n for n in s.notes)


# --------------------------------------------------------------------------- files and skip reasons
def test_drop_missing(tmp_path):
    write(tmp_path / "a.mp4", b"x")
    m = csv_manifest(write(tmp_path / "m.csv", "path,label\na.mp4,0\nb.mp4,1\nc.mp4,1\n"))
    present, gone = drop_missing(m)
    assert [Path(i.path).name for i in present.items] == ["a.mp4"]
    assert [Path(p).name for p in gone] == ["b.mp4", "c.mp4"]


def test_skip_reasons_are_actionable(tmp_path):
    from accel.synth import write_index_video

    good = write_index_video(tmp_path / "good.mp4", 20, width=32, height=32)
    trunc = write(tmp_path / "trunc.mp4", good.read_bytes()[:400])
    text = write(tmp_path / "notes.mp4", "hello, not a video\n")
    empty = write(tmp_path / "empty.mp4", b"")
    cpp = ("cannot open (RuntimeError: SingleStreamDecoder, /__w/torchcodec/src/torchcodec/_core/"
           "SingleStreamDecoder.cpp:41, Could not open input file: x Invalid data found when "
           "processing input)")
    assert explain_skip(str(tmp_path / "gone.mp4"), "no such file").startswith("missing")
    assert explain_skip(str(empty), cpp).startswith("empty file")
    assert explain_skip(str(text), cpp).startswith("not a video")
    reason = explain_skip(str(trunc), cpp)
    assert reason.startswith("truncated or corrupt") and ".cpp" not in reason and "/__w/" not in reason
    lines = skipped_summary([(f"f{i}", "missing (no such file)") for i in range(5)], "metrics.json")
    assert lines[0] == "skipped 5 files (full list: metrics.json):" and lines[-1] == "  ... and 2 more"


def test_audio_only_file_has_no_video_stream(tmp_path):
    av = pytest.importorskip("av")
    import numpy as np

    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=44100)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.rate, f.pts = 44100, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert explain_skip(str(path), "cannot open (IndexError: tuple index out of range)").startswith(
        "no video stream")


# --------------------------------------------------------------------------- models and losses
def test_seed_model_names_are_aliases():
    from models import create_model, is_model, resolve_model_name

    assert resolve_model_name("tsm_resnet") == "tsm_resnet18"
    assert resolve_model_name("r2plus1d") == "r2plus1d_18"
    assert resolve_model_name("CNNLSTM") == "cnn_lstm"
    assert is_model("late_fusion") and not is_model("resnet9000")
    with pytest.raises(ValueError, match="aliases: .*tsm_resnet"):
        resolve_model_name("resnet9000")
    assert type(create_model("tsm_resnet", num_classes=3)).__name__ == "TSMResNet"


def test_bce_is_binary_cross_entropy_on_one_logit():
    from accel.train.losses import build_criterion
    from models import create_model

    torch.manual_seed(0)
    m = create_model("tsn_resnet18", num_classes=2, binary_logit=True).eval()
    x = torch.randn(3, 3, 2, 32, 32)
    logits = m(x)
    assert logits.shape == (3, 2) and torch.equal(logits[:, 0], torch.zeros(3))
    target = torch.tensor([0, 1, 1])
    z = logits[:, 1]
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))(z, target.float())
    got = build_criterion("bce", weight=torch.tensor([0.5, 1.5]))(logits, target)
    assert torch.allclose(got, ref)
    # and the two-class view is exact: softmax of [0, z] is sigmoid(z)
    assert torch.allclose(logits.softmax(1)[:, 1], torch.sigmoid(z))
    with pytest.raises(ValueError, match="2 classes"):
        create_model("tsn_resnet18", num_classes=3, binary_logit=True)


def test_channels_last_gives_canonical_strides_to_1x1_convs():
    from accel.deploy.perf import to_channels_last

    conv = torch.nn.Conv2d(64, 128, 1)
    to_channels_last(conv)
    assert conv.weight.stride() == torch.empty(128, 64, 1, 1, memory_format=torch.channels_last).stride()
    x = torch.randn(2, 64, 8, 8).contiguous(memory_format=torch.channels_last)
    conv(x).sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()  # what DDP's bucket views need


# --------------------------------------------------------------------------- split names
def split_csv(tmp_path: Path, splits: dict[str, int]) -> Path:
    rows = ["path,label,split"] + [f"{name}_{i}.mp4,{'xy'[i % 2]},{name}"
                                   for name, n in splits.items() for i in range(n)]
    return write(tmp_path / "all.csv", "\n".join(rows) + "\n")


@pytest.mark.parametrize("names", [("training", "validation", "testing"), ("Train", "VAL", "Test"),
                                   ("trn", "dev", "tst"), ("TRAINING", "valid", "testing")])
def test_split_column_synonyms_keep_the_splits_apart(tmp_path, names):
    """A split column spelled training/validation/testing (any case) is read as the three
    splits; it used to have "no train rows" and train on every row, val and test included."""
    f = split_csv(tmp_path, dict(zip(names, (6, 2, 4))))
    s = load_splits(f)
    assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 4)
    assert {Path(i.path).name.split("_")[0] for i in s.train.items} == {names[0]}
    assert {Path(i.path).name.split("_")[0] for i in s.test.items} == {names[2]}
    assert not [n for n in s.notes if "held out" in n]


def test_split_column_without_train_rows_stops(tmp_path):
    f = split_csv(tmp_path, {"val": 2, "test": 4})
    err = one_line_error(load_splits, f)
    assert "all.csv" in err and "no rows with split 'train'" in err and "2 val, 4 test" in err


def test_unknown_split_value_stops_naming_file_line_and_values(tmp_path):
    f = split_csv(tmp_path, {"train": 4, "holdout": 2})
    for call in (lambda: load_splits(f), lambda: csv_manifest(f, "train")):
        err = one_line_error(call)
        assert "all.csv:6" in err and "'holdout'" in err and "train" in err


def test_split_column_rows_of_another_split_are_not_a_test_set(tmp_path):
    """--test_dir with a split column but no test rows stops instead of reading every row."""
    train = split_csv(tmp_path / "a", {"train": 4, "val": 2})
    other = split_csv(tmp_path / "b", {"train": 4, "val": 2})
    err = one_line_error(load_splits, train, test_dir=other)
    assert "--test_dir" in err and "no rows with split 'test'" in err and "4 train, 2 val" in err


def test_split_folder_synonyms(tmp_path):
    for split in ("training", "validation", "testing"):
        for c in ("x", "y"):
            write(tmp_path / split / c / f"{c}.mp4", b"x")
    s = load_splits(tmp_path)
    assert s.classes == ["x", "y"] and (len(s.train), len(s.val), len(s.test)) == (2, 2, 2)
    assert all("/training/" in i.path for i in s.train.items)


def test_check_present_drops_missing_files_or_stops_in_one_line(tmp_path):
    """The one missing-file check train.py and evaluate.py share."""
    from accel.data.manifests import check_present

    (tmp_path / "a.mp4").write_bytes(b"x")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.mp4,0\nb.mp4,1\n")
    m = csv_manifest(csv)
    present, gone, warning = check_present(m, what="test")
    assert [i.path for i in present.items] == [str(tmp_path / "a.mp4")]
    assert gone == [(str(tmp_path / "b.mp4"), "missing (no such file)")]
    assert str(warning).startswith("warning: test: 1 of the 2 files") and "video_root" in str(warning)
    assert warning.option == "video_root" and "or to --video_root" in warning.naming("--video_root")
    with pytest.raises(ManifestError, match="1 of the 2 files .* do not exist"):
        check_present(m, strict=True)
    (tmp_path / "a.mp4").unlink()
    with pytest.raises(ManifestError, match="none of the 2 files"):
        check_present(m)
    assert check_present(present.subset([]))[2] is None  # nothing listed, nothing missing
