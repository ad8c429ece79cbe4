"""Hostile input and hostile environments: full disks, concurrent writers, damaged files, bad indices.

Every case must end in a clear :class:`~ase_ldm.errors.AseLdmError` (exit status 2 on the command
line), never in a traceback, a crash, silently wrong data, or lost frames. No GPAW needed: the
datasets are small synthetic ones written with :class:`~ase_ldm.data.DensityWriter`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from ase_ldm.cli.main import main
from ase_ldm.data import DensityWriter, Frame, open_dataset, write_frames
from ase_ldm.data.atomic import OutputLock, temporary_path
from ase_ldm.data.importers import export_cube, frames_from_cubes, frames_from_npz
from ase_ldm.errors import DatasetError, FrameOutOfRange, InvalidInput

ROOT = Path(__file__).resolve().parents[1]
GRID = 8


def frame(i: int, grid: int = GRID, numbers=(3,), seed: int | None = None) -> Frame:
    """A synthetic, valid frame: positive density, one Li atom in a 5 A cube, t = i fs."""
    rng = np.random.default_rng(i if seed is None else seed)
    na = len(numbers)
    return Frame(nt_sR=rng.random((1, grid, grid, grid), dtype=np.float32) + 0.1, positions=np.full((na, 3), 1.0),
                 cell=np.eye(3) * 5.0, numbers=np.array(numbers), time_fs=float(i))


def dataset(path: Path, n: int = 4, **kw) -> Path:
    with DensityWriter(path, attrs={"timestep_fs": 1.0}) as w:
        for i in range(n):
            w.append(frame(i, **kw))
    return path


def npz(path: Path, T: int = 3, grid: int = GRID, numbers=(3,), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, nt=rng.random((T, grid, grid, grid), dtype=np.float32) + 0.1,
             positions=np.ones((T, len(numbers), 3)), cell=np.eye(3) * 5.0, numbers=np.array(numbers),
             timestep_fs=np.float64(1.0))
    return path


def run_python(code: str, *, timeout: float = 60, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, **popen)


def start_python(code: str) -> subprocess.Popen:
    """Start ``code`` in a child process and wait for its first output line ('ready')."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        raise AssertionError(f"child did not start: {line!r} {child.stderr.read()}")
    return child


def stop(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(timeout=30)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".lock")))


@contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """A tmpfs mounted at ``folder`` (root only; skips where mounting is not permitted)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def read_only_folder(tmp_path: Path):
    """A folder nobody may write in: chmod for ordinary users, a read-only tmpfs for root."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    with mounted_tmpfs(folder, "ro,size=1m"):
        yield folder


# -- 1. full disk, file-size limit, read-only folder, damaged frames --------------------------

def test_full_disk_import_is_refused_before_writing(tmp_path):
    """A 3 MB disk: the import stops with 'no room' instead of all-zero frames or a crash, and leaves nothing."""
    src = npz(tmp_path / "big.npz", T=80, grid=24)
    with mounted_tmpfs(tmp_path / "small", "size=3m") as disk:
        r = run_python(f"from ase_ldm.cli.main import main; raise SystemExit(main(['import', '--npz', {str(src)!r}, "
                       f"'-o', {str(disk / 'out.h5')!r}]))")
        assert r.returncode == 2, r.stderr
        assert "DatasetError" in r.stderr and "no room for frame" in r.stderr and "disk full" in r.stderr
        assert "Traceback" not in r.stderr
        assert list(disk.iterdir()) == []


def test_full_disk_recording_keeps_every_written_frame(tmp_path):
    """Appending until the disk is full: the refusal comes before the frame, and every frame on disk is intact."""
    with mounted_tmpfs(tmp_path / "small", "size=3m") as disk:
        out = disk / "rec.h5"
        written = 0
        with pytest.raises(DatasetError, match="no room for frame .*frames written so far are intact"):
            with DensityWriter(out, attrs={"timestep_fs": 1.0}) as w:
                for i in range(200):
                    w.append(frame(i, grid=24))
                    written += 1
        assert written > 10
        with open_dataset(out) as ds:
            assert len(ds) == written
            for i in (0, written // 2, written - 1):
                np.testing.assert_array_equal(ds.nt(i), frame(i, grid=24).nt_sR)
        assert leftovers(disk) == []


def test_file_size_limit_is_refused_up_front(tmp_path):
    """``ulimit -f``: the import is refused cleanly (exit 2), with no output and no temporary file left."""
    src = npz(tmp_path / "big.npz", T=40, grid=24)
    out = tmp_path / "out" / "x.h5"
    out.parent.mkdir()
    r = run_python(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, resource.RLIM_INFINITY))
        from ase_ldm.cli.main import main
        raise SystemExit(main(['import', '--npz', {str(src)!r}, '-o', {str(out)!r}]))
        """)
    assert r.returncode == 2, r.stderr
    assert "file-size limit" in r.stderr and "Traceback" not in r.stderr
    assert list(out.parent.iterdir()) == []


def test_write_failing_half_way_is_a_dataset_error_not_success(tmp_path):
    """With the room check bypassed, HDF5's own write error surfaces as a DatasetError: no frame is
    counted that did not reach the disk, the process does not crash, and the temporary file is removed."""
    src = npz(tmp_path / "big.npz", T=40, grid=24, seed=1)
    out = tmp_path / "out" / "x.h5"
    out.parent.mkdir()
    r = run_python(f"""
        import resource, signal
        from ase_ldm.data import DensityWriter, frames_from_npz, write_frames
        from ase_ldm.errors import DatasetError
        DensityWriter._check_room = lambda self, frame, index: None  # let the write itself fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        frames, attrs = frames_from_npz({str(src)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, resource.RLIM_INFINITY))
        try:
            n = write_frames({str(out)!r}, frames, attrs)
            print('SUCCESS', n)
        except DatasetError as err:
            print('REFUSED', err)
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "REFUSED" in r.stdout and "writing frame" in r.stdout and "File too large" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
    assert list(out.parent.iterdir()) == []


def test_read_only_folder_is_a_dataset_error(tmp_path, capsys):
    src = npz(tmp_path / "a.npz")
    with read_only_folder(tmp_path) as ro:
        assert main(["import", "--npz", str(src), "-o", str(ro / "out.h5")]) == 2
        err = capsys.readouterr().err
        assert "DatasetError" in err and ("read-only" in err or "not writable" in err)
        with pytest.raises(DatasetError, match="read-only|not writable"):
            DensityWriter(ro / "rec.h5")
        with open_dataset(dataset(tmp_path / "d.h5")) as ds:
            with pytest.raises(DatasetError, match="read-only|not writable"):
                export_cube(ds, 0, ro / "f.cube")


def test_frame_whose_data_never_reached_the_disk_is_refused_not_zeros(tmp_path):
    """A frame counted in ``time_fs`` whose density chunk is missing (HDF5 would return zeros) is an error."""
    path = dataset(tmp_path / "d.h5", n=3)
    with h5py.File(path, "r+") as f:  # what a disk filling up between data and bookkeeping leaves behind
        for name in ("nt", "positions", "cell", "time_fs"):
            f[name].resize(4, axis=0)
        f["time_fs"][3] = 3.0
        f["positions"][3] = 1.0
        f["cell"][3] = np.eye(3) * 5
    with open_dataset(path) as ds:
        assert len(ds) == 4
        ds.nt(2)
        for read in (lambda: ds.nt(3), lambda: ds.nt_range(0, 4), lambda: ds.frame(3), lambda: ds.window(3, 2)):
            with pytest.raises(DatasetError, match="frame 3 holds no density data"):
                read()
    assert main(["info", str(path)]) == 2


# -- 2. concurrent writers ---------------------------------------------------------------------

def test_second_import_to_the_same_output_is_refused(tmp_path, capsys):
    a, b = npz(tmp_path / "a.npz", seed=1), npz(tmp_path / "b.npz", seed=2)
    out = tmp_path / "out.h5"
    child = start_python(f"""
        import time
        from ase_ldm.data.atomic import OutputLock
        lock = OutputLock({str(out)!r})
        lock.acquire()
        print('ready', flush=True)
        time.sleep(60)
        """)
    try:
        assert main(["import", "--npz", str(b), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "another process is writing it" in err and "DatasetError" in err
        assert not out.exists()
    finally:
        stop(child)
    # the killed writer's lock file does not block the next one, and nothing is left behind
    assert main(["import", "--npz", str(a), "-o", str(out)]) == 0
    with open_dataset(out) as ds:
        np.testing.assert_array_equal(ds.nt(0)[0], np.load(a)["nt"][0])
    assert leftovers(tmp_path) == []


def test_temporary_names_are_unique_and_removed_on_failure(tmp_path):
    out = tmp_path / "out.h5"
    t1, t2 = temporary_path(out), temporary_path(out)
    assert t1 != t2 and t1.parent == t2.parent == tmp_path
    assert t1.name.startswith("out.h5.") and t1.name.endswith(".part")
    t1.unlink()
    t2.unlink()
    frames = [frame(0), frame(1), Frame(**{**frame(2).__dict__, "nt_sR": np.full((1, GRID, GRID, GRID), np.nan)})]
    with pytest.raises(DatasetError, match="NaN"):
        write_frames(out, frames)
    assert not out.exists() and leftovers(tmp_path) == []


def test_open_writer_refuses_a_second_writer(tmp_path):
    path = tmp_path / "rec.h5"
    with DensityWriter(path) as w:
        w.append(frame(0))
        with pytest.raises(DatasetError, match="another process is writing it"):
            DensityWriter(path, append=True)
        with pytest.raises(DatasetError, match="another process is writing it"):
            write_frames(path, [frame(0)], overwrite=True)
        assert (tmp_path / "rec.h5.lock").exists()
    assert not (tmp_path / "rec.h5.lock").exists()
    with DensityWriter(path, append=True) as w:
        w.append(frame(1))
    with open_dataset(path) as ds:
        assert len(ds) == 2


def test_lock_is_released_after_a_refused_open(tmp_path):
    path = tmp_path / "rec.h5"
    dataset(path, n=1)
    with pytest.raises(DatasetError, match="exists"):
        DensityWriter(path)
    with OutputLock(path) as lock:  # not left held by the refused writer
        assert lock.held


# -- 3. frame indices and rollout counts ------------------------------------------------------

def test_frame_indices_never_wrap(tmp_path):
    with open_dataset(dataset(tmp_path / "d.h5", n=5)) as ds:
        assert ds.frame_index(-1) == 4 and ds.frame_index(-5) == 0 and ds.frame_index(4) == 4
        for bad in (5, 1000, -6):
            with pytest.raises(FrameOutOfRange, match=f"frame {bad} out of range.*0..4"):
                ds.frame_index(bad)
            with pytest.raises(FrameOutOfRange):
                ds.nt(bad)


def test_rollout_refuses_bad_frame_steps_and_samples(tmp_path, capsys):
    pytest.importorskip("torch")
    from ase_ldm.ldm.rollout import rollout_to_datasets

    init = dataset(tmp_path / "init.h5", n=5)
    out = tmp_path / "roll.h5"
    # refused before any model is loaded: the model name does not even exist
    with pytest.raises(FrameOutOfRange, match="--frame 1000 out of range.*5 frames"):
        rollout_to_datasets("no-such-model", init, 1000, 3, out)
    with pytest.raises(FrameOutOfRange):
        rollout_to_datasets("no-such-model", init, -6, 3, out)
    with pytest.raises(InvalidInput, match="previous frame"):
        rollout_to_datasets("no-such-model", init, 0, 3, out)
    with pytest.raises(InvalidInput, match="previous frame"):
        rollout_to_datasets("no-such-model", init, -5, 3, out)
    for steps, samples, match in ((0, 1, "--steps"), (-2, 1, "--steps"), (3, 0, "--samples")):
        with pytest.raises(InvalidInput, match=match):
            rollout_to_datasets("no-such-model", init, 2, steps, out, samples=samples)
    base = ["rollout", "no-such-model", "--init", str(init), "-o", str(out)]
    assert main([*base, "--frame", "1000", "--steps", "3"]) == 2
    assert "FrameOutOfRange" in capsys.readouterr().err
    assert main([*base, "--frame", "2", "--steps", "0"]) == 2
    assert "InvalidInput: --steps must be at least 1" in capsys.readouterr().err
    assert main([*base, "--frame", "2", "--steps", "2", "--samples", "0"]) == 2
    assert "InvalidInput: --samples must be at least 1" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


# -- 4. atomic numbers --------------------------------------------------------------------------

@pytest.mark.parametrize("z", [-3, 0, 119, 2.5])
def test_impossible_atomic_numbers_are_refused(z):
    fr = Frame(**{**frame(0).__dict__, "numbers": np.array([z])})
    with pytest.raises(DatasetError, match="atomic number"):
        fr.validate()


@pytest.mark.parametrize("z", [1, 99, 118])
def test_real_elements_are_accepted(z, tmp_path):
    Frame(**{**frame(0).__dict__, "numbers": np.array([z])}).validate()


def test_import_with_negative_atomic_number_is_refused(tmp_path, capsys):
    src = npz(tmp_path / "neg.npz", numbers=(-3,))
    out = tmp_path / "neg.h5"
    assert main(["import", "--npz", str(src), "-o", str(out)]) == 2
    assert "atomic number -3" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


# -- 5. NaN inside a stored dataset -------------------------------------------------------------

def test_evaluate_refuses_nan_frames(tmp_path, capsys):
    from ase_ldm.analysis.evaluate import evaluate

    ref = dataset(tmp_path / "ref.h5", n=4)
    pred = dataset(tmp_path / "pred.h5", n=4)
    with h5py.File(pred, "r+") as f:
        nt = f["nt"][2]
        nt[0, 1, 2, 3] = np.nan
        f["nt"][2] = nt
    with pytest.raises(DatasetError, match=r"pred\.h5: frame 2 holds NaN"):
        evaluate(pred, ref, plots=False)
    with pytest.raises(DatasetError, match=r"pred\.h5: frame 2 holds NaN"):
        evaluate(ref, pred, plots=False)
    assert main(["evaluate", str(pred), "--reference", str(ref), "-o", str(tmp_path / "rep"), "--no-plots"]) == 2
    assert "frame 2 holds NaN" in capsys.readouterr().err
    assert not (tmp_path / "rep" / "metrics.json").exists()


def test_evaluate_still_works_and_writes_metrics(tmp_path):
    from ase_ldm.analysis.evaluate import evaluate

    ref = dataset(tmp_path / "ref.h5", n=4)
    m = evaluate(ref, ref, tmp_path / "rep", plots=False)
    assert m["rel_l1_mean"] == 0.0
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["frames_pred"] == 4
    assert leftovers(tmp_path / "rep") == []


# -- 6. damaged input files ---------------------------------------------------------------------

def test_bad_npz_files_are_dataset_errors(tmp_path):
    good = npz(tmp_path / "good.npz").read_bytes()
    cases = {
        "empty.npz": b"",
        "truncated.npz": good[: len(good) // 2],
        "cut_end.npz": good[:-30],
        "garbage.npz": b"hello world, this is not numpy " * 10,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match="cannot read as .npz") as info:
            frames_from_npz(tmp_path / name)
        assert "allow_pickle" not in str(info.value)
    np.save(tmp_path / "single.npy", np.ones(3))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    with pytest.raises(DatasetError, match="single array"):
        frames_from_npz(tmp_path / "single.npz")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(DatasetError, match="folder"):
        frames_from_npz(tmp_path / "folder.npz")
    with pytest.raises(DatasetError, match="no such file"):
        frames_from_npz(tmp_path / "missing.npz")


def test_npz_with_a_damaged_member_is_a_dataset_error(tmp_path):
    data = bytearray(npz(tmp_path / "good.npz").read_bytes())
    data[2000:2100] = bytes(100)  # inside nt.npy: the zip directory is intact, the CRC is not
    (tmp_path / "crc.npz").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="damaged or cut-short zip archive"):
        frames_from_npz(tmp_path / "crc.npz")


def test_npz_with_bad_shapes_is_a_dataset_error(tmp_path):
    rng = np.random.default_rng(0)
    base = dict(nt=rng.random((2, 4, 4, 4)) + 0.1, positions=np.ones((2, 1, 3)), cell=np.eye(3) * 5,
                numbers=np.array([3]), timestep_fs=np.float64(1.0))
    for change, match in (({"nt": np.ones((2, 4, 4))}, "nt has shape"), ({"cell": np.eye(2)}, "cell has shape"),
                          ({"timestep_fs": np.float64(-1)}, "timestep_fs"), ({"numbers": np.ones((1, 1))}, "numbers"),
                          ({"energy": np.float64(1.0)}, "energy has no frames")):
        np.savez(tmp_path / "bad.npz", **{**base, **change})
        with pytest.raises(DatasetError, match=match):
            frames_from_npz(tmp_path / "bad.npz")


@pytest.mark.parametrize("meta", ["list", "folder", "garbage"])
def test_bad_meta_json_is_a_dataset_error(tmp_path, meta, capsys):
    src = npz(tmp_path / "d.npz")
    meta_path = tmp_path / "d.meta.json"
    if meta == "list":
        meta_path.write_text(json.dumps([1, 2, 3]))
    elif meta == "folder":
        meta_path.mkdir()
    else:
        meta_path.write_text("{not json")
    match = {"list": "must hold a JSON object", "folder": "is a folder", "garbage": "cannot read the provenance"}[meta]
    with pytest.raises(DatasetError, match=match):
        frames_from_npz(src)
    assert main(["import", "--npz", str(src), "-o", str(tmp_path / "out.h5")]) == 2
    assert "remove it (it is optional)" in capsys.readouterr().err


def test_corrupt_compressed_chunk_is_a_dataset_error(tmp_path, capsys):
    path = dataset(tmp_path / "d.h5", n=3)
    with h5py.File(path, "r") as f:
        info = f["nt"].id.get_chunk_info_by_coord((1, 0, 0, 0, 0))
    data = bytearray(path.read_bytes())
    data[info.byte_offset + 10: info.byte_offset + info.size - 4] = b"\xab" * (info.size - 14)
    path.write_bytes(bytes(data))
    with open_dataset(path) as ds:
        ds.nt(0)
        for read in (lambda: ds.nt(1), lambda: ds.frame(1), lambda: ds.nt_range(0, 3), lambda: ds.electron_counts()):
            with pytest.raises(DatasetError, match="cannot read .*the file is damaged"):
                read()
    assert main(["info", str(path)]) == 2
    assert "the file is damaged" in capsys.readouterr().err


@pytest.mark.parametrize("traj", ["empty", "folder", "truncated"])
def test_bad_trajectory_is_a_dataset_error(tmp_path, traj, capsys):
    path = tmp_path / "md.traj"
    if traj == "empty":
        path.write_bytes(b"")
    elif traj == "folder":
        path.mkdir()
    else:
        from ase import Atoms
        from ase.io import write

        write(path, [Atoms("Li", cell=[5, 5, 5], pbc=True)] * 3)
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="md.traj"):
        list(frames_from_cubes(path, [], 1.0))
    assert main(["import", "--traj", str(path), "--cubes", str(tmp_path / "*.cube"), "--timestep", "1",
                 "-o", str(tmp_path / "out.h5")]) == 2
    assert "DatasetError" in capsys.readouterr().err


# -- 7. reading a file another process is writing ----------------------------------------------

def test_reading_a_file_being_written_says_so(tmp_path, capsys):
    path = dataset(tmp_path / "rec.h5", n=2)
    child = start_python(f"""
        import time
        from ase_ldm.data import DensityWriter
        w = DensityWriter({str(path)!r}, append=True)
        print('ready', flush=True)
        time.sleep(60)
        """)
    try:
        try:
            open_dataset(path).close()
        except DatasetError as err:
            msg = str(err)
        else:
            pytest.skip("HDF5 file locking is off here (HDF5_USE_FILE_LOCKING)")
        assert "another process is writing it" in msg and "HDF5_USE_FILE_LOCKING=FALSE" in msg
        assert "corrupt" not in msg and "truncated" not in msg
        assert main(["info", str(path)]) == 2
        assert "another process is writing it" in capsys.readouterr().err
        # the advice works: with locking off the completed frames are readable
        r = subprocess.run([sys.executable, "-m", "ase_ldm.cli.main", "info", "--json", str(path)], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                       "HDF5_USE_FILE_LOCKING": "FALSE"})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["frames"] == 2
    finally:
        stop(child)
