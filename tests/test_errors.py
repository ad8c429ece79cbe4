"""One error tree (ase_ldm.errors) and how the command line reports it: bad input is one line and
exit 2 with the error's class name; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ase.calculators.calculator import CalculatorSetupError

from ase_ldm import errors
from ase_ldm.cli import main as cli_main


def test_every_error_is_an_ase_ldm_error_and_keeps_its_builtin_base():
    for cls, builtin in [(errors.DatasetError, ValueError), (errors.CheckpointError, ValueError),
                         (errors.ModelMismatch, ValueError), (errors.InvalidInput, ValueError),
                         (errors.UnsupportedSetup, RuntimeError), (errors.FrameOutOfRange, IndexError)]:
        assert issubclass(cls, errors.AseLdmError) and issubclass(cls, builtin)
    from ase_ldm.calculator import CalculatorMismatch

    assert issubclass(CalculatorMismatch, CalculatorSetupError) and issubclass(CalculatorMismatch, errors.ModelMismatch)


def test_cli_prints_class_and_message_for_bad_input(tmp_path, capsys):
    assert cli_main.main(["info", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-ldm info: DatasetError: ") and "missing.h5" in err and "Traceback" not in err


def test_cli_lets_a_bug_show_its_traceback(monkeypatch, tmp_path):
    import ase_ldm.cli.info as info

    def broken(args):
        raise ValueError("an internal numpy-style bug")  # not an AseLdmError: must not look like bad input

    monkeypatch.setattr(info.CLICommand, "run", staticmethod(broken))
    with pytest.raises(ValueError, match="internal"):
        cli_main.main(["info", str(tmp_path / "x.h5")])


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "ase_ldm", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "predict" in proc.stdout and "train-sync" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "ase_ldm", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ase-ldm ")


def test_config_values_of_the_wrong_type_are_refused():
    from ase_ldm.core.config import from_dict
    from ase_ldm.ldm.config import TrainConfig
    from ase_ldm.sync.config import SyncTrainConfig

    with pytest.raises(errors.InvalidInput, match="TrainConfig.epochs must be an integer, got '3'"):
        from_dict(TrainConfig, {"epochs": "3"})
    with pytest.raises(errors.InvalidInput, match="unknown SyncTrainConfig settings"):
        from_dict(SyncTrainConfig, {"epoch": 3})
    with pytest.raises(errors.InvalidInput, match="expected a JSON object"):
        from_dict(SyncTrainConfig, [1, 2])
    cfg = from_dict(SyncTrainConfig, {"model": {"dilations": [1, 2]}, "lr": 1})
    assert cfg.model.dilations == (1, 2) and cfg.lr == 1.0


def test_train_refuses_zero_batch_size(synthetic_long, tmp_path, capsys):
    for cmd in ("train", "train-sync"):
        assert cli_main.main([cmd, str(synthetic_long), "-o", str(tmp_path / cmd), "--batch-size", "0",
                              "--epochs", "1", "--device", "cpu"]) == 2
        assert "batch_size must be at least 1" in capsys.readouterr().err
        assert not (tmp_path / cmd / "model.json").exists()
