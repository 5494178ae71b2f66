"""``run_bench.py data check`` and ``data prepare``: statuses, remedies, and failing fast offline."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest

from benchmark.data import cli as data_cli
from benchmark.data import fake


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")


@pytest.fixture
def data_root(tmp_path):
    fake.write_fake("EuroSAT", tmp_path)
    fake.write_fake("MNIST", tmp_path)
    fake.write_fake("RESISC45", tmp_path)
    (tmp_path / "resisc45" / "resisc45-train.txt").unlink()
    return tmp_path


def _row(output: str, name: str) -> str:
    """The text of ``name``'s table row, continuation lines included."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"│ {name} "))
    row = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("│ " + " " * len(name)) or line.startswith("└"):
            break
        row.append(line)
    return " ".join(" ".join(r.split()) for r in row)


def test_check_reports_present_missing_and_malformed_with_what_to_do(data_root, capsys):
    assert data_cli.main(["check", "--data-root", str(data_root)]) == 1
    out = capsys.readouterr().out
    assert "present" in _row(out, "EuroSAT") and "EuroSAT_splits" in _row(out, "EuroSAT")
    assert "present" in _row(out, "MNIST")
    resisc = _row(out, "RESISC45")
    assert "malformed" in resisc and "resisc45-train.txt" in resisc and "split lists" in resisc
    svhn = _row(out, "SVHN")
    assert "missing" in svhn and "data prepare SVHN" in svhn
    assert "Kaggle" in _row(out, "Cars")
    assert "2 present, 21 missing, 1 malformed" in out


def test_check_of_present_datasets_succeeds(data_root, capsys):
    assert data_cli.main(["check", "EuroSAT", "MNIST", "--data-root", str(data_root)]) == 0
    assert data_cli.main(["check", "digits", "--data-root", str(data_root)]) == 2
    assert "toy dataset" in capsys.readouterr().out


def test_prepare_fails_fast_and_clearly_without_network(tmp_path, monkeypatch, capsys):
    def no_route(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    start = time.perf_counter()
    assert data_cli.main(["prepare", "CIFAR10", "--data-root", str(tmp_path)]) == 3
    assert time.perf_counter() - start < 5
    out = " ".join(capsys.readouterr().out.split())
    assert "no network: www.cs.toronto.edu is unreachable" in out
    assert "python run_bench.py data prepare CIFAR10 --data-root DIR" in out and "DIR/cifar-10-batches-py" in out
    assert not any(tmp_path.iterdir()), "nothing may be written when there is no network"


def test_prepare_reports_a_blocked_download(tmp_path, monkeypatch, capsys):
    def blocked(*args, **kwargs):
        raise urllib.error.URLError("blocked by test")

    monkeypatch.setattr(data_cli, "reachable", lambda host, **kw: True)
    monkeypatch.setattr(urllib.request, "urlopen", blocked)
    assert data_cli.main(["prepare", "MNIST", "--data-root", str(tmp_path)]) == 3
    out = " ".join(capsys.readouterr().out.split())
    assert "download of MNIST failed" in out and "re-run when the network is back" in out


def test_prepare_explains_datasets_torchvision_cannot_download(tmp_path, capsys):
    assert data_cli.main(["prepare", "Cars", "--data-root", str(tmp_path)]) == 2
    assert "torchvision cannot download Cars" in capsys.readouterr().out
    assert data_cli.main(["prepare", "digits", "--data-root", str(tmp_path)]) == 2


def test_prepare_leaves_a_present_dataset_alone(data_root, capsys):
    assert data_cli.main(["prepare", "MNIST", "--data-root", str(data_root)]) == 0
    assert "already present" in capsys.readouterr().out
