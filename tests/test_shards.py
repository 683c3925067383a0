"""fdjpeg defend on WebDataset-style tar shards: real photos in, defended shards out, every other
member kept byte for byte and in order, whole shards or none, --resume."""

import io
import json
import os
import signal
import tarfile

import numpy as np
import pytest
from PIL import Image

import fdjpeg
from fdjpeg import batch, cli, datasets
from test_defend import _finished_by_manifest, _run_cli, _stop_when_started


def _jpeg(img, quality=90):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _write_shard(path, samples):
    """``samples``: [(key, [(field, bytes), ...]), ...] written in that order."""
    with tarfile.open(path, "w") as tar:
        for key, fields in samples:
            for field, data in fields:
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def _decoded(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def _photo_samples(shard, count, offset=0):
    """Real photo crops as JPEG (and one PNG) samples with a class, a JSON label and a mask."""
    photos = list(datasets.sample_photos().values())
    samples = []
    for i in range(count):
        img = photos[(i + offset) % len(photos)]
        crop = np.ascontiguousarray(img[i * 3 : i * 3 + 120, i * 5 : i * 5 + 160])
        if crop.ndim == 2:
            crop = np.stack([crop] * 3, axis=-1)
        image = ("png", _png(crop)) if i == 1 else ("jpg", _jpeg(crop))
        mask = _png((crop[:, :, 0] > 128).astype(np.uint8))
        samples.append((f"{shard}/{i:04d}", [
            ("cls", str(i % 10).encode()), image, ("json", json.dumps({"i": i}).encode()), ("seg.png", mask),
        ]))
    return samples


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    made = {}
    for s in range(3):
        samples = _photo_samples(f"part{s}", 7, offset=s)
        _write_shard(root / f"part-{s:03d}.tar", samples)
        made[f"part-{s:03d}.tar"] = samples
    return root, made


def _check_defended(out_path, samples):
    """The output shard holds each sample in order: the image as KEY.png equal to Feature
    Distillation of the decoded input, every other member byte for byte."""
    got = _members(out_path)
    want_names = []
    for key, fields in samples:
        for field, _ in fields:
            want_names.append(f"{key}.png" if field in ("jpg", "png") else f"{key}.{field}")
    assert [n for n, _ in got] == want_names
    by_name = dict(got)
    for key, fields in samples:
        for field, data in fields:
            if field in ("jpg", "png"):
                np.testing.assert_array_equal(_decoded(by_name[f"{key}.png"]), fdjpeg.feature_distill(_decoded(data)))
            else:
                assert by_name[f"{key}.{field}"] == data


def test_round_trip_keeps_keys_and_other_members(shards, tmp_path):
    root, made = shards
    dst = tmp_path / "out"
    assert cli.main(["defend", str(root), str(dst), "--quiet", "--threads", "2", "--batch-size", "3"]) == 0
    for name, samples in made.items():
        _check_defended(dst / name, samples)
    assert not [n for n in os.listdir(dst) if n.endswith(".tmp")]


def test_one_shard_and_a_list_of_them(shards, tmp_path):
    root, made = shards
    dst = tmp_path / "one"
    summary = batch.defend_files(str(root / "part-001.tar"), str(dst), progress=False)
    assert summary.counts["written"] == 1 and summary.counts["images"] == 7
    _check_defended(dst / "part-001.tar", made["part-001.tar"])
    listing = tmp_path / "shards.txt"
    listing.write_text("shards/part-002.tar\nshards/part-000.tar\n")
    summary = batch.defend_files(str(listing), str(tmp_path / "listed"), progress=False)
    assert summary.counts["written"] == 2
    assert sorted(n for n in os.listdir(tmp_path / "listed") if n.endswith(".tar")) == ["part-000.tar", "part-002.tar"]
    _check_defended(tmp_path / "listed" / "part-002.tar", made["part-002.tar"])


def test_shard_size_regroups_samples_in_order(shards, tmp_path):
    root, made = shards
    dst = tmp_path / "out"
    summary = batch.defend_files(str(root), str(dst), shard_size=5, threads=2, progress=False)
    assert summary.exit_status == 0 and summary.counts["images"] == 21
    outs = sorted(n for n in os.listdir(dst) if n.endswith(".tar"))
    assert outs == [f"shard-{k:06d}.tar" for k in range(5)]  # 21 samples: 5 + 5 + 5 + 5 + 1
    keys = []
    for name in outs:
        names = [n for n, _ in _members(dst / name)]
        keys.append(list(dict.fromkeys(n.split(".")[0] for n in names)))
    assert [len(k) for k in keys] == [5, 5, 5, 5, 1]
    assert sum(keys, []) == [key for name in sorted(made) for key, _ in made[name]]
    with pytest.raises(ValueError, match="tar shards"):
        batch.defend_files(str(tmp_path / "out" / "fdjpeg-report.json"), str(tmp_path / "x"), shard_size=5, progress=False)


def test_a_bad_image_leaves_its_sample_out_and_is_reported(tmp_path):
    good = _photo_samples("p", 3)
    bad = ("p/bad", [("cls", b"3"), ("jpg", b"\xff\xd8\xff\xe0 not really a jpeg")])
    _write_shard(tmp_path / "in.tar", good[:2] + [bad] + good[2:])
    summary = batch.defend_files(str(tmp_path / "in.tar"), str(tmp_path / "out"), progress=False)
    assert summary.exit_status == 1
    failed = [o for o in summary.outcomes if o.status == "failed"]
    assert len(failed) == 1 and failed[0].src.endswith("in.tar:p/bad") and "sample left out" in failed[0].reason
    _check_defended(tmp_path / "out" / "in.tar", good)


def test_a_shard_that_breaks_midway_leaves_no_partial_file(tmp_path):
    """An input shard cut in the middle of a member: the output shard is never renamed into place
    and its temporary file is gone; the other shard is written whole."""
    samples = _photo_samples("a", 6)
    _write_shard(tmp_path / "a.tar", samples)
    data = (tmp_path / "a.tar").read_bytes()
    src = tmp_path / "src"
    src.mkdir()
    (src / "cut.tar").write_bytes(data[: len(data) // 2])
    _write_shard(src / "whole.tar", samples)
    dst = tmp_path / "out"
    summary = batch.defend_files(str(src), str(dst), progress=False)
    assert summary.exit_status == 1
    assert sorted(os.listdir(dst)) == [".fdjpeg-lock", ".fdjpeg-manifest.jsonl", "fdjpeg-report.json", "whole.tar"]
    _check_defended(dst / "whole.tar", samples)
    reasons = [o.reason for o in summary.outcomes if o.status == "failed"]
    assert len(reasons) == 1 and "cannot write the shard" in reasons[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_run_leaves_whole_shards_and_resume_finishes(tmp_path, sig):
    src = tmp_path / "src"
    src.mkdir()
    made = {}
    for s in range(6):
        made[f"s{s}.tar"] = _photo_samples(f"s{s}", 12, offset=s)
        _write_shard(src / f"s{s}.tar", made[f"s{s}.tar"])
    dst = tmp_path / "out"
    _stop_when_started(_run_cli([str(src), str(dst), "--quiet", "--threads", "1", "--batch-size", "1"]), dst, sig, ".tar")
    done = sorted(n for n in os.listdir(dst) if n.endswith(".tar"))
    assert 0 < len(done) < 6, f"the run was not stopped mid-way ({len(done)} done)"
    if sig == signal.SIGINT:
        assert not [n for n in os.listdir(dst) if n.endswith(".tmp")]
    for name in done:  # every shard there is whole
        _check_defended(dst / name, made[name])
    finished = _finished_by_manifest(dst, done)
    assert len(done) - len(finished) <= (1 if sig == signal.SIGKILL else 0)
    summary = batch.defend_files(str(src), str(dst), resume=True, progress=False)
    assert summary.counts["complete"] == len(finished) and summary.counts["written"] == 6 - len(finished)
    assert sorted(n for n in os.listdir(dst) if not n.startswith(".")) == sorted([*made, "fdjpeg-report.json"])
    for name, samples in made.items():
        _check_defended(dst / name, samples)


def test_resume_skips_complete_shards_only_for_the_same_settings(shards, tmp_path):
    root, made = shards
    dst = tmp_path / "out"
    batch.defend_files(str(root), str(dst), progress=False)
    os.unlink(dst / "part-001.tar")
    summary = batch.defend_files(str(root), str(dst), resume=True, progress=False)
    assert summary.counts["complete"] == 2 and summary.counts["written"] == 1
    _check_defended(dst / "part-001.tar", made["part-001.tar"])
    other = batch.defend_files(str(root), str(dst), resume=True, defense="jpeg", progress=False)
    assert other.counts["failed"] == 3 and other.counts["written"] == 0
    assert all("other settings" in o.reason for o in other.outcomes)


def test_ray_reads_a_produced_shard(shards, tmp_path):
    ray = pytest.importorskip("ray")
    root, made = shards
    dst = tmp_path / "out"
    batch.defend_files(str(root / "part-000.tar"), str(dst), progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        rows = ray.data.read_webdataset(str(dst / "part-000.tar")).take_all()
    finally:
        ray.shutdown()
    samples = made["part-000.tar"]
    assert [r["__key__"] for r in rows] == [key for key, _ in samples]
    for row, (key, fields) in zip(rows, samples):
        image = dict(fields).get("jpg") or dict(fields)["png"]
        np.testing.assert_array_equal(np.asarray(row["png"]), fdjpeg.feature_distill(_decoded(image)))
        assert row["json"] == {"i": int(key.split("/")[1])}
