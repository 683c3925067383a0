"""``fdjpeg defend`` tried as a hostile user would: every way found to lose or misplace data, each
closed (usage errors exit 2 before anything is written; nothing written outside DST or into SRC)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import fdjpeg
from fdjpeg import batch, cli, datasets
from trees import snapshot


def _photo(k=0, size=48):
    cat = datasets.sample_photos()["chelsea"]
    return np.ascontiguousarray(cat[k * 5 : k * 5 + size, k * 3 : k * 3 + size])


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(root / "a.png")
    Image.fromarray(_photo(1)).save(root / "sub" / "b.png")
    return root


def _defend(*args):
    return cli.main(["defend", *map(str, args), "--quiet"])


# ------------------------------------------------------------------------------------------------
# --report


@pytest.mark.parametrize("where", ["input", "output", "inside_src", "folder"])
def test_report_on_an_input_an_output_or_inside_src_is_refused(src, tmp_path, capsys, where):
    dst = tmp_path / "dst"
    report = {"input": src / "a.png", "output": dst / "a.png", "inside_src": src / "new-report.json",
              "folder": src.parent}[where]
    before = snapshot(src)
    assert _defend(src, dst, "--report", report) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdjpeg defend: ") and "--report" in err and err.count("\n") == 1
    assert not dst.exists() and snapshot(src) == before


def test_report_elsewhere_is_written(src, tmp_path):
    assert _defend(src, tmp_path / "dst", "--report", tmp_path / "r.json") == 0
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["written"] == 2


# ------------------------------------------------------------------------------------------------
# Output names that collide after the extension rename


def test_names_colliding_after_rename_each_get_their_own_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["x.jpg", "x.png", "x.jpg.png", "y.jpeg", "y.JPG", "y.png"]
    for k, name in enumerate(names):
        Image.fromarray(_photo(k)).save(src / name, format="PNG")  # PNG data whatever the name: exact pixels
    dst = tmp_path / "dst"
    assert _defend(src, dst) == 0
    outputs = sorted(n for n in os.listdir(dst) if n.endswith(".png"))
    assert len(outputs) == len(names)
    report = json.loads((dst / batch.REPORT_NAME).read_text())
    assert report["counts"]["written"] == len(names)
    mapping = {os.path.basename(e["src"]): os.path.basename(e["out"]) for e in report["files"] if e.get("renamed")}
    # the documented rule: a unique name keeps the plain rename, the others keep their extension,
    # and what still clashes gets ~2, ~3 ...
    assert mapping == {"x.jpg": "x.jpg~2.png", "x.png": "x.png.png", "y.jpeg": "y.jpeg.png",
                       "y.JPG": "y.JPG.png", "y.png": "y.png.png"}
    for k, name in enumerate(names):
        out = mapping.get(name, "x.jpg.png" if name == "x.jpg.png" else None)
        with Image.open(dst / out) as im:
            np.testing.assert_array_equal(np.asarray(im), fdjpeg.feature_distill(_photo(k)), err_msg=name)
    # a second run in resume mode finds every one complete
    assert _defend(src, dst, "--resume") == 0
    assert json.loads((dst / batch.REPORT_NAME).read_text())["counts"]["complete"] == len(names)


# ------------------------------------------------------------------------------------------------
# SRC inside DST, and folders in DST that are links elsewhere: real paths decide


def test_src_inside_dst_never_written_into(tmp_path, capsys):
    d = tmp_path / "D"
    (d / "S" / "S").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(d / "S" / "S" / "x.png")  # would map to D/S/x.png: inside SRC
    Image.fromarray(_photo(1)).save(d / "S" / "top.png")
    before = snapshot(d)
    assert _defend(d / "S", d) == 2
    assert "inside SRC" in capsys.readouterr().err
    assert snapshot(d) == before and sorted(os.listdir(d)) == ["S"]


def test_src_inside_dst_without_overlap_is_fine(tmp_path):
    d = tmp_path / "D"
    (d / "S").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(d / "S" / "x.png")
    before = snapshot(d / "S")
    assert _defend(d / "S", d) == 0
    assert (d / "x.png").exists() and snapshot(d / "S") == before


@pytest.mark.parametrize("target", ["outside", "into_src"])
def test_linked_folder_in_dst_is_not_written_through(src, tmp_path, capsys, target):
    dst = tmp_path / "dst"
    dst.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere if target == "outside" else src / "sub", dst / "sub")
    before = snapshot(src), snapshot(elsewhere)
    assert _defend(src, dst) == 2
    err = capsys.readouterr().err
    assert "outside DST" in err or "inside SRC" in err or "overwrite the input" in err
    assert (snapshot(src), snapshot(elsewhere)) == before
    assert sorted(os.listdir(dst)) == ["sub"]


# ------------------------------------------------------------------------------------------------
# Two runs on one DST


def test_second_run_on_a_busy_dst_exits_2(src, tmp_path):
    import fcntl
    import subprocess
    import sys

    dst = tmp_path / "dst"
    dst.mkdir()
    with open(dst / batch.LOCK_NAME, "a") as held:  # what a running `fdjpeg defend` holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.run([sys.executable, "-m", "fdjpeg", "defend", str(src), str(dst), "--quiet"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "busy" in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert sorted(os.listdir(dst)) == [batch.LOCK_NAME]  # no output, manifest or report of its own
    assert _defend(src, dst) == 0  # once the other run has gone
    assert (dst / "a.png").exists() and (dst / "sub" / "b.png").exists()


# ------------------------------------------------------------------------------------------------
# --resume never takes an output made with other settings as complete


def _outputs_are_fd(src, dst):
    for rel in ("a.png", "sub/b.png"):
        with Image.open(src / rel) as im:
            want = fdjpeg.feature_distill(np.asarray(im))
        with Image.open(dst / rel) as im:
            if not np.array_equal(np.asarray(im), want):
                return False
    return True


@pytest.mark.parametrize("lost", ["manifest_kept", "manifest_removed", "manifest_cut"])
def test_resume_with_other_settings_is_redone_or_reported(src, tmp_path, lost):
    dst = tmp_path / "dst"
    assert _defend(src, dst, "--defense", "jpeg", "--param", "quality=20") == 0
    manifest = dst / batch.MANIFEST_NAME
    if lost == "manifest_removed":
        manifest.unlink()
    elif lost == "manifest_cut":  # a kill can cut the last line
        manifest.write_text(manifest.read_text()[:-5])
    code = _defend(src, dst, "--resume")  # fd now
    report = json.loads((dst / batch.REPORT_NAME).read_text())
    assert report["counts"]["complete"] == 0
    if _outputs_are_fd(src, dst):
        assert code == 0
    else:  # each one left is reported, and says how to redo it
        assert code == 1
        failed = [e for e in report["files"] if e["status"] == "failed"]
        assert len(failed) + report["counts"]["written"] == 2 and all("--overwrite" in e["reason"] for e in failed)
    assert _defend(src, dst, "--overwrite") == 0 and _outputs_are_fd(src, dst)
    assert _defend(src, dst, "--resume") == 0
    assert json.loads((dst / batch.REPORT_NAME).read_text())["counts"]["complete"] == 2


def test_resume_redoes_an_output_whose_replacement_stopped(src, tmp_path):
    """A run stopped between an output's "writing" line and its "done" line (before or after the
    rename): --resume cannot vouch for the file there, so it defends that image again."""
    dst = tmp_path / "dst"
    assert _defend(src, dst) == 0
    manifest = dst / batch.MANIFEST_NAME
    lines = manifest.read_text().splitlines(keepends=True)
    done_b = next(i for i, line in enumerate(lines) if '"sub/b.png"' in line and '"done"' in line)
    manifest.write_text("".join(lines[:done_b] + lines[done_b + 1 :]))  # b's "done" line never came
    (dst / "sub" / "b.png").write_bytes(b"cut short")
    assert _defend(src, dst, "--resume") == 0
    counts = json.loads((dst / batch.REPORT_NAME).read_text())["counts"]
    assert counts["complete"] == 1 and counts["written"] == 1
    assert _outputs_are_fd(src, dst)


@pytest.mark.parametrize("fsync", [False, True])
def test_fsync_syncs_each_output_before_its_rename(src, tmp_path, monkeypatch, fsync):
    """Outputs are renamed into place whole either way; --fsync also syncs each first."""
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append((str(a), str(b))), real_replace(a, b))[1])
    dst = tmp_path / "dst"
    args = ("--threads", "1", "--report", tmp_path / "report.json") + (("--fsync",) if fsync else ())
    assert _defend(src, dst, *args) == 0 and _outputs_are_fd(src, dst)
    outputs = [(a, b) for a, b in renamed if b.endswith(".png")]
    assert sorted(os.path.relpath(b, dst) for _, b in outputs) == ["a.png", os.path.join("sub", "b.png")]
    output_temps = sorted(a for a, _ in outputs)
    assert sorted(s for s in synced if s in output_temps) == (output_temps if fsync else [])


def test_resume_of_one_file_made_with_other_settings(src, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert _defend(src / "a.png", out, "--defense", "jpeg", "--param", "quality=20") == 0
    made = out.read_bytes()
    code = _defend(src / "a.png", out, "--resume")
    assert code == 1 and "0 already complete" in capsys.readouterr().out
    assert out.read_bytes() == made  # reported, not replaced without --overwrite


# ------------------------------------------------------------------------------------------------
# A DST (or report) that cannot be written


@pytest.mark.parametrize("form", ["a_file", "below_a_file", "deep_below_a_file", "report_below_a_file"])
def test_impossible_dst_is_one_line_and_nothing_created(src, tmp_path, form):
    import subprocess
    import sys

    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"someone's file")
    dst = {"a_file": blocker, "below_a_file": blocker / "dst", "deep_below_a_file": blocker / "a" / "b",
           "report_below_a_file": tmp_path / "dst"}[form]
    extra = ["--report", str(blocker / "r.json")] if form == "report_below_a_file" else []
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "fdjpeg", "defend", str(src), str(dst), "--quiet", *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fdjpeg defend: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "dst").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the other forms cover root")
def test_read_only_dst_is_one_line(src, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert _defend(src, parent / "dst") == 2
        assert "not writable" in capsys.readouterr().err and not (parent / "dst").exists()
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------------------------------------------
# Links in SRC


@pytest.fixture
def linked_src(src, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(_photo(2)).save(outside / "c.png")
    os.symlink(outside / "c.png", src / "out_link.png")  # a file outside SRC
    os.symlink(src / "a.png", src / "in_link.png")  # a file inside SRC: an input like any other
    os.symlink(outside, src / "dir_link")  # a folder outside SRC
    os.symlink(src, src / "sub" / "loop")  # a folder link back up: a loop when followed
    return src


def test_links_out_of_src_are_skipped_and_reported(linked_src, tmp_path, capsys):
    dst = tmp_path / "dst"
    assert _defend(linked_src, dst) == 0
    assert "3 skipped" in capsys.readouterr().out
    report = json.loads((dst / batch.REPORT_NAME).read_text())
    skipped = {os.path.relpath(e["src"], linked_src): e["reason"] for e in report["files"] if e["status"] == "skipped"}
    assert set(skipped) == {"out_link.png", "dir_link", os.path.join("sub", "loop")}
    assert "--follow-links" in skipped["out_link.png"] and "--follow-links" in skipped["dir_link"]
    assert report["counts"]["written"] == 3 and report["counts"]["skipped"] == 3
    assert (dst / "in_link.png").exists() and not (dst / "out_link.png").exists() and not (dst / "dir_link").exists()


def test_follow_links_defends_them_once_and_stops_at_loops(linked_src, tmp_path):
    dst = tmp_path / "dst"
    assert cli.main(["defend", str(linked_src), str(dst), "--quiet", "--follow-links"]) == 0
    report = json.loads((dst / batch.REPORT_NAME).read_text())
    assert report["counts"]["written"] == 5  # a, sub/b, in_link, out_link, dir_link/c
    with Image.open(dst / "dir_link" / "c.png") as im:
        np.testing.assert_array_equal(np.asarray(im), fdjpeg.feature_distill(_photo(2)))
    (loop,) = [e for e in report["files"] if e["status"] == "skipped"]
    assert loop["src"].endswith("loop") and "already walked" in loop["reason"]


# ------------------------------------------------------------------------------------------------
# File names that are not UTF-8


def test_names_not_utf8_are_defended_and_reported(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    good = os.path.join(os.fsencode(src), b"bad\xff.png")
    Image.fromarray(_photo(0)).save(os.fsdecode(good), format="PNG")
    with open(os.path.join(os.fsencode(src), b"worse\xfe.png"), "wb") as f:
        f.write(b"not an image")
    dst = tmp_path / "dst"
    env = dict(os.environ, PYTHONIOENCODING="utf-8", LC_ALL="C.UTF-8")
    proc = subprocess.run([sys.executable, "-m", "fdjpeg", "defend", str(src), str(dst), "--quiet"],
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr and b"1 written" in proc.stdout
    assert b"worse\\xfe.png" in proc.stdout  # the failed one named, its byte escaped
    with Image.open(os.path.join(os.fsencode(dst), b"bad\xff.png")) as im:
        np.testing.assert_array_equal(np.asarray(im), fdjpeg.feature_distill(_photo(0)))
    raw = (dst / batch.REPORT_NAME).read_bytes()
    report = json.loads(raw.decode("utf-8"))  # strict UTF-8, no lone surrogates
    (failed,) = [e for e in report["files"] if e["status"] == "failed"]
    assert failed["src"].endswith("worse\\xfe.png")
    json.dumps(report, ensure_ascii=False).encode("utf-8")  # every string is real text
    # resume finds it complete by its real (bytes) name
    again = subprocess.run([sys.executable, "-m", "fdjpeg", "defend", str(src), str(dst), "--quiet", "--resume"],
                           capture_output=True, timeout=120, env=env)
    assert b"1 already complete" in again.stdout, again.stderr
