"""On-disk layouts of the real datasets: how to find, list and label their images under a data root.

Researchers already hold these datasets in a few layouts, and the harness reads them where they
are rather than asking for a conversion:

- torchvision's own formats (``torchvision.datasets.X(root, download=False)``), wherever torchvision
  supports the dataset;
- the ImageFolder trees that the task-vector papers' preparation scripts produce (mlfoundations/
  task_vectors issue #1, reused by TALL masks, TSV, Iso-C, ...): ``dtd/{train,val}``,
  ``EuroSAT_splits/{train,val,test}``, ``sun397/{train,val}``, ``resisc45`` with its split lists;
- the archives of the domain-generalisation datasets as distributed (DomainNet with its official
  ``<domain>_{train,test}.txt``, ImageNet-R, PACS, OfficeHome).

A layout lists a split as :class:`Samples` — labels plus a loader of the i-th image — without
decoding anything: decoding happens once, when the eval tensor cache is built. ``docs/DATA.md``
documents every layout; :meth:`DatasetLayout.expected` is the same text, printed by ``data check``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib
import inspect
import os
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

#: A file of this name in a dataset's folder says the data are a fake (``benchmark.data.fake``):
#: torchvision's MD5 check, which no fake can pass, is skipped for that folder only.
FAKE_MARKER = ".ww-fake"
#: torchvision modules that verify MD5 sums of the files they read.
MD5_CHECKING_MODULES = ("cifar", "stl10", "svhn", "flowers102", "fer2013")

_MD5_LOCK = threading.Lock()
_MD5_SKIPS = [0]  # how many callers are inside skip_torchvision_md5 (nested or in other threads)
_MD5_SAVED: list = []


@contextlib.contextmanager
def skip_torchvision_md5() -> Iterator[None]:
    """Let torchvision read fakes: existence is checked, MD5 sums are not (restored on exit).

    Re-entrant and thread-safe: the originals come back when the last caller leaves, so two
    threads reading fakes at once cannot leave the check disabled for good.
    """
    from torchvision.datasets import utils

    def exists_only(fpath, md5=None):
        return Path(fpath).is_file()

    with _MD5_LOCK:
        if _MD5_SKIPS[0] == 0:
            for name in MD5_CHECKING_MODULES:
                module = importlib.import_module(f"torchvision.datasets.{name}")
                _MD5_SAVED.append((module, module.check_integrity))
                module.check_integrity = exists_only
            _MD5_SAVED.append((utils, utils.check_integrity))
            utils.check_integrity = exists_only
        _MD5_SKIPS[0] += 1
    try:
        yield
    finally:
        with _MD5_LOCK:
            _MD5_SKIPS[0] -= 1
            if _MD5_SKIPS[0] == 0:
                for module, original in _MD5_SAVED:
                    module.check_integrity = original
                _MD5_SAVED.clear()


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


class DatasetMissingError(FileNotFoundError):
    """A dataset is not under the data root; the message names the expected paths and the fix."""


class DatasetMalformedError(ValueError):
    """A dataset is under the data root but not in a layout the registry can read; says what is wrong."""


@dataclass
class Samples:
    """A labelled list of images not yet decoded.

    ``keys`` are stable identities (relative paths, or ``split:index`` for array formats) used by
    hash-based splits, so an image's side of a split never depends on the listing order.
    """

    labels: np.ndarray
    load: Callable[[int], Image.Image]
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int] | np.ndarray) -> "Samples":
        idx = np.asarray(indices, dtype=np.int64)
        keys = [self.keys[i] for i in idx] if self.keys else []
        return Samples(self.labels[idx], partial(_load_at, self.load, idx), keys)

    @staticmethod
    def from_files(paths: Sequence[Path], labels: Sequence[int], base: Path) -> "Samples":
        paths = list(paths)
        return Samples(
            np.asarray(labels, dtype=np.int64),
            partial(_open_at, paths),
            [p.relative_to(base).as_posix() for p in paths],
        )

    @staticmethod
    def concat(parts: Sequence["Samples"]) -> "Samples":
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts])
        return Samples(
            np.concatenate([p.labels for p in parts]) if parts else np.empty(0, np.int64),
            partial(_load_concat, [p.load for p in parts], offsets),
            [k for p in parts for k in p.keys],
        )


def _load_at(load: Callable[[int], Image.Image], idx: np.ndarray, i: int) -> Image.Image:
    return load(int(idx[i]))


def _open_at(paths: list[Path], i: int) -> Image.Image:
    return Image.open(paths[i])


def _load_concat(loads: list, offsets: np.ndarray, i: int) -> Image.Image:
    part = int(np.searchsorted(offsets, i, side="right")) - 1
    return loads[part](i - int(offsets[part]))


def hash_fraction(key: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, key): the basis of every seeded split.

    Hashing each file's relative path (instead of permuting a listing) keeps an image on the same
    side of a split on every machine, whatever the file system's listing order and even when
    other files are added.
    """
    digest = hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (deterministic on every file system)."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def class_images(folder: Path) -> list[Path]:
    """The images of one class folder; an empty one is an error (an interrupted extraction, a bad copy).

    A class with no images would silently drop out of training and make its test accuracy
    meaningless, so the split is refused with the folder named.
    """
    files = list_images(folder)
    if not files:
        raise DatasetMalformedError(
            f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "restore them (re-extract the archive) and run again"
        )
    return files


def list_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


@dataclass(frozen=True)
class Probe:
    """What ``data check`` reports for one layout found under the root."""

    ok: bool
    detail: str
    fix: str = ""


class DatasetLayout(abc.ABC):
    """One way a dataset can sit under the data root."""

    #: short name shown by ``data check`` ("torchvision", "task-vectors ImageFolder", ...)
    kind: str = ""

    @abc.abstractmethod
    def expected(self) -> str:
        """Paths relative to the data root, for messages and docs/DATA.md."""
        ...

    @abc.abstractmethod
    def folder(self) -> str:
        """The top-level folder under the data root this layout lives in (what to copy elsewhere)."""
        ...

    @abc.abstractmethod
    def probe(self, root: Path) -> Probe | None:
        """None when the layout is absent; otherwise whether it looks complete (cheap: no listing)."""
        ...

    @abc.abstractmethod
    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        """The official ``split`` ("train" or "test") of the dataset (of ``domain`` if given)."""
        ...

    def classnames(self, root: Path) -> tuple[str, ...] | None:
        """Class names read from disk, for datasets whose names ship with the data; else None."""
        return None


def _need(paths: Sequence[Path]) -> list[Path]:
    return [p for p in paths if not p.exists()]


def _map_folders(found: Sequence[str], expected: Sequence[str], where: Path) -> dict[str, int]:
    """Label of each class folder, checking the folders are exactly the dataset's classes."""
    missing = [f for f in expected if f not in found]
    extra = [f for f in found if f not in expected]
    if missing or extra:
        raise DatasetMalformedError(
            f"{where}: class folders differ from the dataset's {len(expected)} classes"
            + (f"; missing {missing[:5]}" if missing else "")
            + (f"; unexpected {extra[:5]}" if extra else "")
        )
    return {name: i for i, name in enumerate(expected)}


# ---------------------------------------------------------------------------------------------
# torchvision formats


def _torchvision_labels(ds: Any) -> np.ndarray:
    """Labels of a torchvision dataset without decoding its images (each class keeps them somewhere)."""
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is not None:
            return np.asarray(value, dtype=np.int64).reshape(-1)
    for attr in ("_samples", "samples"):
        value = getattr(ds, attr, None)
        if value is not None:
            return np.asarray([int(s[1]) for s in value], dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)  # pragma: no cover


def _torchvision_image(ds: Any, i: int) -> Image.Image:
    image = ds[i][0]
    if not isinstance(image, Image.Image):  # pragma: no cover - every class used returns PIL
        raise TypeError(f"{type(ds).__name__} returned {type(image).__name__}, expected a PIL image")
    return image


class TorchvisionLayout(DatasetLayout):
    """A dataset in torchvision's own format, read by ``torchvision.datasets.<cls>(download=False)``.

    ``splits`` maps "train"/"test" to one or more keyword sets (DTD's training set is the union of
    its official train and val lists, as in PAINT and task vectors). ``markers`` are the paths
    whose presence says the layout is there; ``requires`` lists modules the class imports lazily.
    """

    kind = "torchvision"

    def __init__(
        self,
        cls: str,
        subdir: str,
        splits: dict[str, list[dict]],
        markers: Sequence[str],
        requires: Sequence[str] = (),
        labels: Callable[[Any, Path], np.ndarray] | None = None,
    ):
        self.cls, self.subdir, self.splits = cls, subdir, splits
        self.markers, self.requires, self._labels = tuple(markers), tuple(requires), labels

    def _root(self, root: Path) -> Path:
        return root / self.subdir if self.subdir else root

    def folder(self) -> str:
        return self.subdir or self.markers[0].split("/")[0]

    def expected(self) -> str:
        base = f"{self.subdir}/" if self.subdir else ""
        return f"torchvision.datasets.{self.cls}(root=<data root>/{self.subdir}): " + ", ".join(
            f"{base}{m}" for m in self.markers
        )

    def probe(self, root: Path) -> Probe | None:
        here = self._root(root)
        present = [m for m in self.markers if (here / m).exists()]
        if not present:
            return None
        missing = [m for m in self.markers if m not in present]
        if missing:
            return Probe(
                False,
                f"incomplete torchvision layout: missing {', '.join(missing)}",
                f"re-extract the archive under {here}",
            )
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                return Probe(
                    False, f"files present, but reading them needs the {module!r} package", f"pip install {module}"
                )
        return Probe(True, f"torchvision {self.cls} under {here}")

    def is_fake(self, root: Path) -> bool:
        """The folder of the layout's first marker holds :data:`FAKE_MARKER` (written by the fakes)."""
        return ((self._root(root) / self.markers[0]).parent / FAKE_MARKER).is_file()

    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        import torchvision.datasets as tvd

        if self.is_fake(root):  # real downloads keep torchvision's MD5 check
            with skip_torchvision_md5():
                return self._read(root, split, tvd)
        return self._read(root, split, tvd)

    def _read(self, root: Path, split: str, tvd: Any) -> Samples:
        cls = getattr(tvd, self.cls)
        # FER2013 has no download argument; every other class gets download=False spelled out
        offline = {"download": False} if "download" in inspect.signature(cls).parameters else {}
        parts = []
        for kwargs in self.splits[split]:
            try:
                ds = cls(root=str(self._root(root)), **offline, **kwargs)
            except (RuntimeError, FileNotFoundError, OSError, KeyError) as exc:
                raise DatasetMalformedError(
                    f"torchvision {self.cls}({kwargs}) cannot read {self._root(root)}: {exc}"
                ) from exc
            labels = self._labels(ds, self._root(root)) if self._labels else _torchvision_labels(ds)
            tag = "-".join(f"{k}={v}" for k, v in kwargs.items())
            parts.append(Samples(labels, partial(_torchvision_image, ds), [f"{tag}:{i}" for i in range(len(labels))]))
        return Samples.concat(parts)


# ---------------------------------------------------------------------------------------------
# Folder layouts


class SplitFoldersLayout(DatasetLayout):
    """ImageFolder trees with one folder per split: ``<subdir>/<split>/<class>/<image>``.

    The task-vector papers' preparation scripts write these. Their ``val`` folder is the *test*
    set for DTD and SUN397 (the scripts put the official test images there and evaluate on it), so
    ``test_dirs`` is tried in order: ``test`` when present, else ``val``. The harness's own
    validation split is always carved from train (see ``benchmark.data.loaders``), never read from here.

    ``folders`` fixes the label of each class folder (and checks them); ``None`` takes the sorted
    folder names and derives class names with ``name_of`` (SUN397's ``a_abbey`` → ``abbey``).
    """

    kind = "task-vectors ImageFolder"

    def __init__(
        self,
        subdir: str,
        folders: Sequence[str] | None = None,
        *,
        train_dirs: Sequence[str] = ("train",),
        test_dirs: Sequence[str] = ("test", "val"),
        name_of: Callable[[str], str] | None = None,
    ):
        self.subdir, self.folders = subdir, tuple(folders) if folders else None
        self.train_dirs, self.test_dirs, self.name_of = tuple(train_dirs), tuple(test_dirs), name_of

    def folder(self) -> str:
        return self.subdir

    def expected(self) -> str:
        tests = ",".join(self.test_dirs)
        return f"{self.subdir}/{self.train_dirs[0]}/<class>/*.jpg and {self.subdir}/{{{tests}}}/<class>/*.jpg"

    def _split_dir(self, root: Path, split: str) -> Path | None:
        for name in self.train_dirs if split == "train" else self.test_dirs:
            if (root / self.subdir / name).is_dir():
                return root / self.subdir / name
        return None

    def probe(self, root: Path) -> Probe | None:
        train, test = self._split_dir(root, "train"), self._split_dir(root, "test")
        if train is None and test is None:
            return None
        if train is None or test is None:
            which = "train" if train is None else "/".join(self.test_dirs)
            return Probe(False, f"{self.subdir}/ has no {which} folder", "re-run the preparation script (docs/DATA.md)")
        n = len(list_dirs(train))
        want = len(self.folders) if self.folders else None
        if want and n != want:
            return Probe(False, f"{train} has {n} class folders, expected {want}", "re-run the preparation script")
        return Probe(True, f"ImageFolder {train.parent} ({n} classes, test = {test.name}/)")

    def _classes(self, root: Path) -> list[str]:
        train = self._split_dir(root, "train")
        if train is None:
            raise DatasetMissingError(f"{root / self.subdir}: no train folder")
        return list(self.folders) if self.folders else list_dirs(train)

    def classnames(self, root: Path) -> tuple[str, ...] | None:
        if self.folders:
            return None
        return tuple((self.name_of or str)(f) for f in self._classes(root))

    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        where = self._split_dir(root, split)
        if where is None:
            raise DatasetMissingError(f"{root / self.subdir}: no {split} folder ({self.expected()})")
        classes = self._classes(root)
        label_of = _map_folders(list_dirs(where), classes, where)
        paths, labels = [], []
        for folder in classes:
            files = class_images(where / folder)
            paths += files
            labels += [label_of[folder]] * len(files)
        return Samples.from_files(paths, labels, root)


class ListedFolderLayout(DatasetLayout):
    """Class folders plus split lists of file names: RESISC45 as the task-vector papers read it.

    ``<subdir>/<images>/<class>/<file>`` and ``<subdir>/<prefix>-{train,test}.txt`` (one file
    name per line, the splits of "In-domain representation learning for remote sensing").
    """

    kind = "class folders + split lists"

    def __init__(self, subdir: str, images: str, folders: Sequence[str], lists: dict[str, str]):
        self.subdir, self.images, self.folders, self.lists = subdir, images, tuple(folders), lists

    def folder(self) -> str:
        return self.subdir

    def expected(self) -> str:
        return f"{self.subdir}/{self.images}/<class>/*.jpg and " + ", ".join(
            f"{self.subdir}/{name}" for name in self.lists.values()
        )

    def probe(self, root: Path) -> Probe | None:
        base = root / self.subdir
        if not (base / self.images).is_dir():
            return None
        missing = [name for name in self.lists.values() if not (base / name).is_file()]
        if missing:
            return Probe(
                False,
                f"{base / self.images} present but split lists missing: {', '.join(missing)}",
                "download the split lists (docs/DATA.md, RESISC45) next to the image folder",
            )
        n = len(list_dirs(base / self.images))
        if n != len(self.folders):
            return Probe(
                False,
                f"{base / self.images} has {n} class folders, expected {len(self.folders)}",
                "re-extract the archive",
            )
        return Probe(True, f"{base} ({n} classes, split lists)")

    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        base = root / self.subdir
        listing = base / self.lists[split]
        if not listing.is_file():
            raise DatasetMissingError(f"split list {listing} not found ({self.expected()})")
        wanted = {line.strip() for line in listing.read_text().splitlines() if line.strip()}
        label_of = _map_folders(list_dirs(base / self.images), self.folders, base / self.images)
        paths, labels = [], []
        for folder in self.folders:
            files = [p for p in class_images(base / self.images / folder) if p.name in wanted]
            paths += files
            labels += [label_of[folder]] * len(files)
        if not paths:
            raise DatasetMalformedError(f"no image of {listing} found under {base / self.images}")
        missing = sorted(wanted - {p.name for p in paths})
        if missing:
            raise DatasetMalformedError(
                f"{len(missing)} of {len(wanted)} images listed in {listing} are not under "
                f"{base / self.images} (e.g. {missing[:3]}); re-extract the archive"
            )
        return Samples.from_files(paths, labels, root)


class HashSplitLayout(DatasetLayout):
    """Class folders without an official train/test split, split by hashing each relative path.

    ``<subdir>/<class>/<file>`` (single domain), or ``<subdir>/<domain dir>/<class>/<file>`` when
    ``domain_dirs`` maps domains to folders, or domains encoded in file names (ImageNet-R's
    ``<rendition>_<n>.jpg``) through ``domain_of_file``. An image is in test when
    ``hash_fraction(path, salt) < test_fraction``: fixed, machine-independent, documented.
    """

    kind = "class folders, seeded split"

    def __init__(
        self,
        subdir: str | Sequence[str],
        folders: Sequence[str] | Callable[[], Sequence[str]] | None,
        *,
        test_fraction: float,
        salt: str,
        domain_dirs: dict[str, Sequence[str]] | None = None,
        domain_of_file: Callable[[str], str] | None = None,
        name_of: Callable[[str], str] | None = None,
    ):
        self.subdirs = (subdir,) if isinstance(subdir, str) else tuple(subdir)
        self._folders, self.test_fraction, self.salt = folders, test_fraction, salt
        self.domain_dirs, self.domain_of_file, self.name_of = domain_dirs, domain_of_file, name_of

    @property
    def folders(self) -> tuple[str, ...] | None:
        """The expected class folders (resolved lazily: ImageNet-R's come from an installed package)."""
        folders = self._folders() if callable(self._folders) else self._folders
        return tuple(folders) if folders else None

    def _base(self, root: Path) -> Path | None:
        for sub in self.subdirs:
            if (root / sub).is_dir():
                return root / sub
        return None

    def folder(self) -> str:
        return self.subdirs[0].split("/")[0]

    def expected(self) -> str:
        inner = "<domain>/<class>/*.jpg" if self.domain_dirs else "<class>/*.jpg"
        return " or ".join(f"{s}/{inner}" for s in self.subdirs) + (
            f" (domains: {', '.join(self.domain_dirs)})" if self.domain_dirs else ""
        )

    def _domain_dir(self, base: Path, domain: str) -> Path | None:
        for name in self.domain_dirs[domain]:
            if (base / name).is_dir():
                return base / name
        return None

    def _class_root(self, base: Path) -> Path:
        if not self.domain_dirs:
            return base
        for domain in self.domain_dirs:
            found = self._domain_dir(base, domain)
            if found is not None:
                return found
        raise DatasetMalformedError(f"{base}: none of the domain folders {list(self.domain_dirs)} exists")

    def probe(self, root: Path) -> Probe | None:
        base = self._base(root)
        if base is None:
            return None
        if self.domain_dirs:
            missing = [d for d in self.domain_dirs if self._domain_dir(base, d) is None]
            if missing:
                return Probe(False, f"{base}: domain folders missing: {', '.join(missing)}", "re-extract the archive")
        n = len(list_dirs(self._class_root(base)))
        if self.folders and n != len(self.folders):
            return Probe(
                False,
                f"{self._class_root(base)} has {n} class folders, expected {len(self.folders)}",
                "re-extract the archive",
            )
        return Probe(True, f"{base} ({n} classes, seeded {1 - self.test_fraction:.0%}/{self.test_fraction:.0%} split)")

    def _classes(self, root: Path) -> list[str]:
        base = self._base(root)
        if base is None:
            raise DatasetMissingError(f"none of {self.subdirs} under {root}")
        return list(self.folders) if self.folders else list_dirs(self._class_root(base))

    def classnames(self, root: Path) -> tuple[str, ...] | None:
        if self.folders:
            return None
        return tuple((self.name_of or str)(f) for f in self._classes(root))

    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        base = self._base(root)
        if base is None:
            raise DatasetMissingError(f"none of {self.subdirs} under {root}")
        classes = self._classes(root)
        if self.domain_dirs:
            chosen = [domain] if domain else list(self.domain_dirs)
            trees = [self._domain_dir(base, d) for d in chosen]
            if any(t is None for t in trees):
                raise DatasetMissingError(f"{base}: domain folder of {chosen} missing")
        else:
            trees = [base]
        paths, labels = [], []
        for tree in trees:
            label_of = _map_folders(list_dirs(tree), classes, tree)
            for folder in classes:
                for path in class_images(tree / folder):
                    rel = path.relative_to(root).as_posix()
                    if domain and self.domain_of_file and self.domain_of_file(path.name) != domain:
                        continue
                    if (hash_fraction(rel, self.salt) < self.test_fraction) == (split == "test"):
                        paths.append(path)
                        labels.append(label_of[folder])
        return Samples.from_files(paths, labels, root)


class DomainNetLayout(DatasetLayout):
    """DomainNet as distributed: ``<subdir>/<domain>/<class>/<file>`` and the official split lists
    ``<subdir>/<domain>_{train,test}.txt`` (lines ``clipart/aircraft_carrier/clipart_001_000018.jpg 0``).

    Class names come from the lists themselves (label → class folder), so the label order is the
    official one and nothing about the 345 names has to be typed in by hand.
    """

    kind = "DomainNet (official split lists)"

    def __init__(self, subdirs: Sequence[str], domains: Sequence[str], n_classes: int):
        self.subdirs, self.domains, self.n_classes = tuple(subdirs), tuple(domains), n_classes

    def _base(self, root: Path) -> Path | None:
        for sub in self.subdirs:
            if (root / sub).is_dir():
                return root / sub
        return None

    def folder(self) -> str:
        return self.subdirs[0]

    def expected(self) -> str:
        sub = self.subdirs[0]
        return (
            f"{sub}/<domain>/<class>/*.jpg and {sub}/<domain>_train.txt, {sub}/<domain>_test.txt "
            f"for domains {', '.join(self.domains)}"
        )

    def _lists(self, base: Path, domain: str) -> list[Path]:
        return [base / f"{domain}_{split}.txt" for split in ("train", "test")]

    def probe(self, root: Path) -> Probe | None:
        base = self._base(root)
        if base is None:
            return None
        missing = [d for d in self.domains if not (base / d).is_dir()]
        lists = [p.name for d in self.domains for p in self._lists(base, d) if not p.is_file()]
        if missing or lists:
            return Probe(
                False,
                f"{base}: "
                + "; ".join(
                    ([f"domain folders missing: {', '.join(missing)}"] if missing else [])
                    + ([f"split lists missing: {', '.join(lists)}"] if lists else [])
                ),
                "download every domain's zip and its _train.txt/_test.txt (docs/DATA.md, DomainNet)",
            )
        return Probe(True, f"{base} ({len(self.domains)} domains, official splits)")

    @staticmethod
    def _parse(listing: Path) -> list[tuple[str, int]]:
        rows = []
        for line in listing.read_text().splitlines():
            if line.strip():
                path, label = line.rsplit(maxsplit=1)
                rows.append((path, int(label)))
        return rows

    def classnames(self, root: Path) -> tuple[str, ...] | None:
        base = self._base(root)
        if base is None:
            raise DatasetMissingError(f"none of {self.subdirs} under {root}")
        names: dict[int, str] = {}
        for domain in self.domains:
            for listing in self._lists(base, domain):
                if listing.is_file():
                    for path, label in self._parse(listing):
                        names.setdefault(label, path.split("/")[1])
            if len(names) == self.n_classes:
                break
        if sorted(names) != list(range(self.n_classes)):
            raise DatasetMalformedError(f"{base}: split lists name {len(names)} classes, expected {self.n_classes}")
        return tuple(names[i].replace("_", " ") for i in range(self.n_classes))

    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        base = self._base(root)
        if base is None:
            raise DatasetMissingError(f"none of {self.subdirs} under {root}")
        paths, labels = [], []
        for d in [domain] if domain else self.domains:
            listing = base / f"{d}_{split}.txt"
            if not listing.is_file():
                raise DatasetMissingError(f"DomainNet split list {listing} not found")
            for rel, label in self._parse(listing):
                paths.append(base / rel)
                labels.append(label)
        return Samples.from_files(paths, labels, root)


class SUN397PartitionLayout(DatasetLayout):
    """torchvision's SUN397 tree plus the official partition lists it does not read.

    ``SUN397/ClassName.txt``, ``SUN397/<letter>/<class>[/<sub>]/sun_*.jpg`` and partition 1
    (``SUN397/Training_01.txt``, ``SUN397/Testing_01.txt``, 50 + 50 images per class) from
    ``Partitions.zip``: the split the task-vector papers' ``sun397/{train,val}`` folders hold.
    """

    kind = "torchvision + partition lists"

    def folder(self) -> str:
        return "SUN397"

    def expected(self) -> str:
        return "SUN397/ClassName.txt, SUN397/<letter>/<class>/sun_*.jpg, SUN397/Training_01.txt, SUN397/Testing_01.txt"

    def probe(self, root: Path) -> Probe | None:
        base = root / "SUN397"
        if not base.is_dir():
            return None
        missing = [p.name for p in _need([base / "ClassName.txt", base / "Training_01.txt", base / "Testing_01.txt"])]
        if missing:
            return Probe(
                False,
                f"{base}: missing {', '.join(missing)}",
                "unzip Partitions.zip (SUN397 site) into SUN397/ (docs/DATA.md)",
            )
        return Probe(True, f"{base} (partition 01)")

    @staticmethod
    def _classes(base: Path) -> list[str]:
        return [line.strip() for line in (base / "ClassName.txt").read_text().splitlines() if line.strip()]

    def classnames(self, root: Path) -> tuple[str, ...] | None:
        # "/a/apartment_building/outdoor" → "apartment building outdoor", as the papers name them
        return tuple(c[3:].replace("/", " ").replace("_", " ") for c in self._classes(root / "SUN397"))

    def read(self, root: Path, split: str, domain: str | None) -> Samples:
        base = root / "SUN397"
        label_of = {c: i for i, c in enumerate(self._classes(base))}
        listing = base / ("Training_01.txt" if split == "train" else "Testing_01.txt")
        paths, labels = [], []
        for line in listing.read_text().splitlines():
            line = line.strip()
            if line:
                paths.append(base / line.lstrip("/"))
                labels.append(label_of[line.rsplit("/", 1)[0]])
        return Samples.from_files(paths, labels, root)
