"""``run_bench.py data check [--data-root DIR]`` and ``run_bench.py data prepare NAME``.

``check`` answers "can this machine run the paper's setups?" before a cluster-day is spent: per
real dataset, present (and in which layout), missing (and how to obtain it) or malformed (what is
wrong and how to fix it). ``prepare`` downloads what torchvision can download into the data root;
where there is no network it says so at once, instead of hanging in a retry loop or leaving a
half-written archive that ``check`` would later call malformed.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmark.data import REAL_DATASETS, DatasetMalformedError, DatasetMissingError
from benchmark.data import loaders as data

#: Seconds to wait for a TCP connection before declaring the network absent.
CONNECT_TIMEOUT = 5.0


class NoNetworkError(OSError):
    """The download host is unreachable from this machine."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py data", description="Real datasets under the data root.")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="per dataset: present / missing / malformed, and what to do")
    check.add_argument("--data-root", default=None, help=f"data root (default: ${data.DATA_ROOT_ENV} or ~/data)")
    check.add_argument("datasets", nargs="*", help="datasets to check (default: all)")
    prepare = sub.add_parser("prepare", help="download a dataset with torchvision (needs a network)")
    prepare.add_argument("name", help=f"one of {sorted(REAL_DATASETS)}")
    prepare.add_argument("--data-root", default=None, help=f"data root (default: ${data.DATA_ROOT_ENV} or ~/data)")
    return parser


def dataset_status(name: str, root: Path) -> tuple[str, str, str]:
    """(status, detail, what to do) of one dataset: status is present, missing or malformed."""
    info = REAL_DATASETS[name]
    try:
        layout = data.find_layout(name, root)
        probe = layout.probe(root)
        data.dataset_classnames(name, root)
        return "present", f"{layout.kind}: {probe.detail}".replace(f"{root}{os.sep}", ""), ""
    except DatasetMissingError:
        others = len(info.layouts) - 1
        more = f" (or {others} other layout{'s' * (others > 1)}, docs/DATA.md)" if others else ""
        return "missing", f"expected {info.layouts[0].expected()}{more}", info.obtain
    except (DatasetMalformedError, OSError, ValueError) as exc:
        broken = [p for p in (layout.probe(root) for layout in info.layouts) if p is not None and not p.ok]
        where = f"{root}{os.sep}"
        detail = "; ".join(p.detail for p in broken) if broken else str(exc).splitlines()[0]
        fix = "; ".join(p.fix for p in broken if p.fix) or f"re-create it: {info.obtain}"
        return "malformed", detail.replace(where, ""), fix


def cmd_check(args, console: Console) -> int:
    root = data.data_root(args.data_root)
    names = args.datasets or list(REAL_DATASETS)
    for name in names:
        data.check_dataset_name(name)
        if name not in REAL_DATASETS:
            raise ValueError(
                f"{name!r} is a toy dataset (generated, nothing to check); check real ones: {sorted(REAL_DATASETS)}"
            )
    table = Table(title=f"Datasets under {root}", show_lines=False)
    for column in ("dataset", "setups", "status", "layout / problem", "what to do"):
        table.add_column(column, overflow="fold")
    colours = {"present": "green", "missing": "yellow", "malformed": "red"}
    counts = {"present": 0, "missing": 0, "malformed": 0}
    for name in names:
        status, detail, todo = dataset_status(name, root)
        counts[status] += 1
        table.add_row(name, ", ".join(REAL_DATASETS[name].used_by), f"[{colours[status]}]{status}[/]", detail, todo)
    console.print(table)
    console.print(
        f"{counts['present']} present, {counts['missing']} missing, {counts['malformed']} malformed "
        f"(data root: --data-root, else ${data.DATA_ROOT_ENV}, else ~/data; layouts: docs/DATA.md)"
    )
    return 0 if counts["present"] == len(names) else 1


def reachable(host: str, port: int = 443, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` (DNS failure counts as no)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def prepare(name: str, root: Path, log=print) -> Path:
    """Download ``name`` into ``root`` with torchvision; return the root once ``check`` would pass.

    Raises :class:`NoNetworkError` when the host is unreachable, ``ValueError`` when torchvision
    cannot download this dataset (the message says how to obtain it by hand).
    """
    data.check_dataset_name(name)
    info = REAL_DATASETS.get(name)
    if info is None:
        raise ValueError(f"{name!r} is a toy dataset: it is generated, there is nothing to download")
    try:
        data.find_layout(name, root)
        log(f"{name} is already present under {root}")
        return root
    except DatasetMissingError:
        pass
    except DatasetMalformedError as exc:
        log(f"{name} is present but not readable ({exc}); downloading over it")
    if info.download is None:
        raise ValueError(f"torchvision cannot download {name}; to obtain it: {info.obtain} (docs/DATA.md)")
    job = info.download
    if not reachable(job.host):
        raise NoNetworkError(
            f"no network: {job.host} is unreachable from this machine, so {name} cannot be downloaded here. "
            f"On a connected machine run `python run_bench.py data prepare {name} --data-root DIR`, then copy "
            f"DIR/{job.folder} into {root}/ (layouts: docs/DATA.md)"
        )
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    target = root / job.subdir if job.subdir else root
    target.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        for kwargs in job.calls:
            log(f"downloading {name} ({job.cls}{kwargs or ''}) into {target} ...")
            getattr(tvd, job.cls)(root=str(target), download=True, **kwargs)
        for url, folder in job.archives:
            log(f"downloading {url} ...")
            download_and_extract_archive(url, download_root=str(root / folder))
    except Exception as exc:  # torchvision raises URLError, HTTPError, RuntimeError, OSError...
        raise NoNetworkError(
            f"download of {name} failed ({type(exc).__name__}: {exc}); partial files may remain "
            f"under {target}; re-run when the network is back"
        ) from exc
    data.find_layout(name, root)
    log(f"{name} ready under {root} ({time.perf_counter() - start:.0f} s)")
    return root


def cmd_prepare(args, console: Console) -> int:
    root = data.data_root(args.data_root)
    try:
        prepare(args.name, root, log=lambda text: console.print(text, highlight=False))
    except NoNetworkError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``run_bench.py data ...``; usage errors print one line and return 2."""
    args = _parser().parse_args(argv)
    console = Console()
    try:
        return {"check": cmd_check, "prepare": cmd_prepare}[args.action](args, console)
    except ValueError as exc:
        if os.environ.get("WW_DEBUG"):
            raise
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
