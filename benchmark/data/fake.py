"""Tiny fake copies of the real datasets, written in each real on-disk layout.

Why in the package rather than in the tests: the tests load them through the real registry (the
only way to know the layouts are read right without the real 100 GB), ``run_bench.py perf eval``
times decoding against the eval cache on them, and a researcher can smoke-test a real spec
(``WW_DATA_ROOT=/tmp/fake python run_bench.py run benchmark/spec/presets/mtl8.yaml --dry-run``) before
downloading anything.

Every image is a flat colour that encodes its label (:func:`label_colour`), and grey-level formats
use 20 · label, so a test can check that a label survived the
layout, the split logic, the decoding and the cache. torchvision checks MD5 sums of some files
(CIFAR, STL10, SVHN, Flowers102, FER2013) on every load; fakes cannot match them, so their writers
leave a :data:`~benchmark.data.layouts.FAKE_MARKER` file next to the data, and the registry
skips the check for folders holding it (real downloads keep it; see :func:`skip_torchvision_md5`).

Writers of datasets with many classes take ``test_images``: the test split then holds that many
images spread over the classes (the head still covers every class), so a rehearsal at real
resolution evaluates a few dozen images per task instead of one per class.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from benchmark.data import classnames as names
from benchmark.data.layouts import FAKE_MARKER, hash_fraction, skip_torchvision_md5  # noqa: F401 (re-exported)


def label_colour(label: int) -> tuple[int, int, int]:
    """Red and green steps wide enough to survive JPEG: labels up to 383 (DomainNet has 345)."""
    return (4 * (label % 64) + 2, 40 * (label // 64) + 10, 128)


def colour_label(red: np.ndarray, green: np.ndarray) -> np.ndarray:
    """The inverse of :func:`label_colour`, rounding away compression noise."""
    red, green = np.asarray(red, np.float64), np.asarray(green, np.float64)
    return (np.round((red - 2) / 4) + 64 * np.round((green - 10) / 40)).astype(np.int64)


def label_grey(label: int) -> int:
    return min(255, 20 * label)


def _image(path: Path, label: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".ppm": "PPM"}[path.suffix.lower()]
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    Image.new("RGB", size, label_colour(label)).save(path, fmt, **options)


def _mark_fake(folder: Path) -> None:
    """Say that ``folder`` holds a fake (the registry then skips torchvision's MD5 check there)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FAKE_MARKER).write_text("written by benchmark.data.fake: MD5 sums cannot match\n")


def _test_labels(n_classes: int, per_class: int, test_images: int | None) -> set[int]:
    """Labels that get test images: all of them, or ``test_images // per_class`` spread evenly.

    At least two: the formats kept in MATLAB files (Cars, Flowers102) read back a single record as
    a scalar, which torchvision cannot iterate.
    """
    if test_images is None or test_images >= n_classes * per_class:
        return set(range(n_classes))
    k = min(n_classes, max(2, test_images // per_class))
    return {int(i) for i in np.linspace(0, n_classes - 1, k).round()}


# ---------------------------------------------------------------------------------------------
# Folder layouts


def _folders_per_split(base: Path, splits: dict[str, str], folders, per_class: int, size, ext=".jpg") -> None:
    for split, folder_name in splits.items():
        for label, folder in enumerate(folders):
            for k in range(per_class):
                _image(base / folder_name / folder / f"{split}_{k}{ext}", label, size)


def _split_folders(root: Path, subdir: str, folders, per_class: int, size, test_dir="test") -> None:
    _folders_per_split(root / subdir, {"train": "train", "test": test_dir}, folders, per_class, size)


def _hash_balanced_names(prefix: str, salt: str, rel_dir: str, per_side: int, fraction: float) -> list[str]:
    """File names that land ``per_side`` on each side of a hash split (so no side is empty)."""
    test, train, k = [], [], 0
    while len(test) < per_side or len(train) < per_side:
        name = f"{prefix}{k}.jpg"
        side = test if hash_fraction(f"{rel_dir}/{name}", salt) < fraction else train
        if len(side) < per_side:
            side.append(name)
        k += 1
    return test + train


def write_sun397_folders(root: Path, per_class: int = 1, size=(24, 20), n_classes: int = 397) -> None:
    folders = [f"{chr(97 + i % 26)}_fake_scene_{i:03d}" for i in range(n_classes)]
    _split_folders(root, "sun397", sorted(folders), per_class, size, test_dir="val")


def write_sun397_partitions(
    root: Path, per_class: int = 1, size=(24, 20), n_classes: int = 397, test_images: int | None = None
) -> None:
    base = root / "SUN397"
    classes = sorted(f"/{chr(97 + i % 26)}/fake_scene_{i:03d}" for i in range(n_classes))
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    lists = {"Training_01.txt": [], "Testing_01.txt": []}
    tested = _test_labels(n_classes, per_class, test_images)
    for label, cls in enumerate(classes):
        for listing, tag in (("Training_01.txt", "tr"), ("Testing_01.txt", "te")):
            if tag == "te" and label not in tested:
                continue
            for k in range(per_class):
                rel = f"{cls}/sun_{tag}{k}.jpg"
                _image(base / rel.lstrip("/"), label, size)
                lists[listing].append(rel)
    for listing, rows in lists.items():
        (base / listing).write_text("\n".join(rows) + "\n")


def write_eurosat_splits(root: Path, per_class: int = 2, size=(24, 20)) -> None:
    _folders_per_split(
        root / "EuroSAT_splits",
        {"train": "train", "val": "val", "test": "test"},
        names.EUROSAT_FOLDERS,
        per_class,
        size,
    )


def write_eurosat_torchvision(root: Path, per_class: int = 2, size=(24, 20)) -> None:
    base = root / "eurosat" / "2750"
    for label, folder in enumerate(names.EUROSAT_FOLDERS):
        for name in _hash_balanced_names(f"{folder}_", "EuroSAT", f"eurosat/2750/{folder}", per_class, 0.1):
            _image(base / folder / name, label, size)


def write_dtd_folders(root: Path, per_class: int = 1, size=(24, 20)) -> None:
    _split_folders(root, "dtd", names.DTD, per_class, size, test_dir="val")


def write_resisc45(root: Path, per_class: int = 1, size=(24, 20), test_images: int | None = None) -> None:
    base = root / "resisc45"
    lists = {"train": [], "val": [], "test": []}
    tested = _test_labels(len(names.RESISC45_FOLDERS), per_class, test_images)
    for label, folder in enumerate(names.RESISC45_FOLDERS):
        for split in lists:
            if split == "test" and label not in tested:
                continue
            for k in range(per_class):
                name = f"{folder}_{split}{k:03d}.jpg"
                _image(base / "NWPU-RESISC45" / folder / name, label, size)
                lists[split].append(name)
    for split, rows in lists.items():
        (base / f"resisc45-{split}.txt").write_text("\n".join(rows) + "\n")


def write_imagenet_r(root: Path, per_class: int = 1, size=(24, 20), renditions=("art", "cartoon", "sketch")) -> None:
    for label, wnid in enumerate(names.imagenet_r_wnids()):
        for rendition in renditions:
            for name in _hash_balanced_names(f"{rendition}_", "ImageNet-R", f"imagenet-r/{wnid}", per_class, 0.2):
                _image(root / "imagenet-r" / wnid / name, label, size)


def write_domainnet(
    root: Path, per_class: int = 1, size=(16, 16), n_classes: int = 345, domains=names.DOMAINNET_DOMAINS
) -> None:
    base = root / "domainnet"
    classes = [f"fake_class_{i:03d}" for i in range(n_classes)]
    for domain in domains:
        for split in ("train", "test"):
            rows = []
            for label, cls in enumerate(classes):
                for k in range(per_class):
                    rel = f"{domain}/{cls}/{domain}_{split}_{k}.jpg"
                    _image(base / rel, label, size)
                    rows.append(f"{rel} {label}")
            (base / f"{domain}_{split}.txt").write_text("\n".join(rows) + "\n")


def _multi_domain_folders(
    base: Path, domain_dirs: dict[str, str], folders, per_class: int, size, salt: str, root: Path
) -> None:
    for domain_dir in domain_dirs.values():
        for label, folder in enumerate(folders):
            rel_dir = (base / domain_dir / folder).relative_to(root).as_posix()
            for name in _hash_balanced_names("img_", salt, rel_dir, per_class, 0.2):
                _image(base / domain_dir / folder / name, label, size)


def write_pacs(root: Path, per_class: int = 1, size=(24, 20)) -> None:
    _multi_domain_folders(
        root / "PACS" / "kfold", {d: d for d in names.PACS_DOMAINS}, names.PACS, per_class, size, "PACS", root
    )


def write_office_home(root: Path, per_class: int = 1, size=(24, 20), n_classes: int = 65) -> None:
    folders = [f"Fake_Object_{i:02d}" for i in range(n_classes)]
    _multi_domain_folders(
        root / "OfficeHome",
        {d: d.replace("_", " ") if d == "Real_World" else d for d in names.OFFICE_HOME_DOMAINS},
        folders,
        per_class,
        size,
        "OfficeHome",
        root,
    )


# ---------------------------------------------------------------------------------------------
# torchvision formats


def _idx_images(path: Path, images: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    header = np.array([2051, n, h, w], dtype=">i4").tobytes()
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: np.ndarray) -> None:
    header = np.array([2049, len(labels)], dtype=">i4").tobytes()
    path.write_bytes(header + labels.astype(np.uint8).tobytes())


def _grey_stack(labels: np.ndarray, side: int = 28) -> np.ndarray:
    return np.stack([np.full((side, side), label_grey(int(c)), np.uint8) for c in labels])


def write_mnist_like(
    root: Path,
    folder: str = "MNIST",
    per_class: int = 2,
    n_classes: int = 10,
    prefixes=("train", "t10k"),
    test_images: int | None = None,
) -> None:
    raw = root / folder / "raw"
    tested = _test_labels(n_classes, per_class, test_images)
    for prefix in prefixes:
        labels = np.repeat([c for c in range(n_classes) if prefix == prefixes[0] or c in tested], per_class)
        _idx_images(raw / f"{prefix}-images-idx3-ubyte", _grey_stack(labels))
        _idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)


def write_svhn(root: Path, per_class: int = 2, subdir: str = "svhn", test_images: int | None = None) -> None:
    from scipy.io import savemat

    base = root / subdir
    base.mkdir(parents=True, exist_ok=True)
    tested = _test_labels(10, per_class, test_images)
    for split in ("train", "test"):
        labels = np.repeat([c for c in range(10) if split == "train" or c in tested], per_class)
        x = np.stack([np.broadcast_to(np.array(label_colour(int(c)), np.uint8), (32, 32, 3)) for c in labels], axis=-1)
        savemat(base / f"{split}_32x32.mat", {"X": x, "y": np.where(labels == 0, 10, labels).reshape(-1, 1)})
    _mark_fake(base)


def write_gtsrb(root: Path, per_class: int = 1, size=(24, 20), test_images: int | None = None) -> None:
    base = root / "gtsrb"
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    tested = _test_labels(43, per_class, test_images)
    for label in range(43):
        for k in range(per_class):
            _image(base / "GTSRB" / "Training" / f"{label:05d}" / f"{label:05d}_{k:05d}.ppm", label, size)
            if label not in tested:
                continue
            name = f"{label:03d}{k:02d}.ppm"
            _image(base / "GTSRB" / "Final_Test" / "Images" / name, label, size)
            rows.append(f"{name};{size[0]};{size[1]};0;0;{size[0]};{size[1]};{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def write_dtd_torchvision(root: Path, per_class: int = 1, size=(24, 20), test_images: int | None = None) -> None:
    base = root / "dtd" / "dtd"
    lists = {"train1.txt": [], "val1.txt": [], "test1.txt": []}
    tested = _test_labels(len(names.DTD), per_class, test_images)
    for label, cls in enumerate(names.DTD):
        for listing in lists:
            if listing == "test1.txt" and label not in tested:
                continue
            for k in range(per_class):
                name = f"{cls}_{listing[:-5]}{k}.jpg"
                _image(base / "images" / cls / name, label, size)
                lists[listing].append(f"{cls}/{name}")
    (base / "labels").mkdir(parents=True, exist_ok=True)
    for listing, rows in lists.items():
        (base / "labels" / listing).write_text("\n".join(rows) + "\n")


def write_cars(
    root: Path, per_class: int = 1, size=(24, 20), n_classes: int = 196, test_images: int | None = None
) -> None:
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    class_names = np.array([f"Fake Make Model {i:03d} 2012" for i in range(n_classes)], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": class_names.reshape(1, -1)})
    for split, folder, mat in (
        ("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
        ("test", "cars_test", base / "cars_test_annos_withlabels.mat"),
    ):
        records = []
        tested = _test_labels(n_classes, per_class, test_images) if split == "test" else range(n_classes)
        for label in range(n_classes):
            if label not in tested:
                continue
            for k in range(per_class):
                fname = f"{split}{label:03d}{k}.jpg"
                _image(base / folder / fname, label, size)
                records.append((fname, label + 1))
        annos = np.array(records, dtype=[("fname", object), ("class", object)])
        savemat(mat, {"annotations": annos.reshape(1, -1)})


def write_flowers102(root: Path, per_class: int = 2, size=(24, 20), test_images: int | None = None) -> None:
    from scipy.io import savemat

    base = root / "flowers-102"
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    tested = _test_labels(102, per_class, test_images)
    image_id = 1
    for label in range(102):
        for split in ids:
            for _ in range(per_class if split != "tstid" or label in tested else 0):
                _image(base / "jpg" / f"image_{image_id:05d}.jpg", label, size)
                labels.append(label + 1)
                ids[split].append(image_id)
                image_id += 1
    savemat(base / "imagelabels.mat", {"labels": np.array(labels).reshape(1, -1)})
    savemat(base / "setid.mat", {k: np.array(v).reshape(1, -1) for k, v in ids.items()})
    _mark_fake(base)


def write_fer2013(root: Path, per_class: int = 2) -> None:
    base = root / "fer2013"
    base.mkdir(parents=True, exist_ok=True)
    rows = ["emotion,pixels,Usage"]
    for label in range(7):
        pixels = " ".join([str(label_grey(label))] * (48 * 48))
        for usage in ("Training", "PublicTest", "PrivateTest"):
            rows += [f"{label},{pixels},{usage}"] * per_class
    (base / "fer2013.csv").write_text("\n".join(rows) + "\n")
    _mark_fake(base)


def write_oxford_pets(root: Path, per_class: int = 1, size=(24, 20), test_images: int | None = None) -> None:
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    tested = _test_labels(len(names.OXFORD_PETS), per_class, test_images)
    for split in ("trainval", "test"):
        rows = []
        for label, breed in enumerate(names.OXFORD_PETS):
            stem = breed.replace(" ", "_")
            for k in range(per_class if split == "trainval" or label in tested else 0):
                image_id = f"{stem}_{split}{k}"
                _image(base / "images" / f"{image_id}.jpg", label, size)
                rows.append(f"{image_id} {label + 1} 1 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def write_stl10(root: Path, per_class: int = 2) -> None:
    base = root / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(10), per_class)
        x = np.stack(
            [np.broadcast_to(np.array(label_colour(int(c)), np.uint8).reshape(3, 1, 1), (3, 96, 96)) for c in labels]
        )
        (base / f"{split}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())
        (base / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (base / "unlabeled_X.bin").write_bytes(b"")
    _mark_fake(base)


def write_cifar(root: Path, hundred: bool = False, per_class: int = 2, test_images: int | None = None) -> None:
    n_classes = 100 if hundred else 10
    base = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    base.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"

    def batch(labels):
        data = np.stack([np.repeat(np.array(label_colour(int(c)), np.uint8), 1024) for c in labels])
        return {"data": data, key: [int(c) for c in labels]}

    labels = np.repeat(np.arange(n_classes), per_class)
    tested = _test_labels(n_classes, per_class, test_images)
    test = batch(np.array([c for c in labels if c in tested]))
    files = (
        {"train": batch(labels), "test": test}
        if hundred
        else {**{f"data_batch_{i}": batch(labels) for i in range(1, 6)}, "test_batch": test}
    )
    for name, content in files.items():
        (base / name).write_bytes(pickle.dumps(content))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else {"label_names": list(names.CIFAR10)}
    (base / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))
    _mark_fake(base)


def write_food101(root: Path, per_class: int = 1, size=(24, 20), test_images: int | None = None) -> None:
    base = root / "food-101"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    folders = [n.replace(" ", "_") for n in names.FOOD101]
    tested = _test_labels(len(folders), per_class, test_images)
    for split in ("train", "test"):
        meta = {}
        for label, folder in enumerate(folders):
            meta[folder] = []
            for k in range(per_class if split == "train" or label in tested else 0):
                rel = f"{folder}/{split}{k}"
                _image(base / "images" / f"{rel}.jpg", label, size)
                meta[folder].append(rel)
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))


def write_rendered_sst2(root: Path, per_class: int = 2, size=(24, 20)) -> None:
    _folders_per_split(
        root / "rendered-sst2",
        {"train": "train", "val": "valid", "test": "test"},
        names.RENDERED_SST2,
        per_class,
        size,
        ext=".png",
    )


def write_pcam(root: Path, per_class: int = 2) -> None:
    import h5py

    base = root / "pcam"
    base.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(2), per_class)
        x = np.stack([np.broadcast_to(np.array(label_colour(int(c)), np.uint8), (96, 96, 3)) for c in labels])
        with h5py.File(base / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as fh:
            fh["x"] = x
        with h5py.File(base / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as fh:
            fh["y"] = labels.reshape(-1, 1, 1, 1).astype(np.uint8)


#: One writer per (dataset, layout): everything the registry can read, in fake.
WRITERS: dict[str, dict[str, Callable[..., None]]] = {
    "SUN397": {"folders": write_sun397_folders, "partitions": write_sun397_partitions},
    "Cars": {"torchvision": write_cars},
    "RESISC45": {"lists": write_resisc45},
    "EuroSAT": {"folders": write_eurosat_splits, "torchvision": write_eurosat_torchvision},
    "SVHN": {"torchvision": write_svhn},
    "GTSRB": {"torchvision": write_gtsrb},
    "MNIST": {"torchvision": write_mnist_like},
    "DTD": {"folders": write_dtd_folders, "torchvision": write_dtd_torchvision},
    "Flowers102": {"torchvision": write_flowers102},
    "PCAM": {"torchvision": write_pcam},
    "FER2013": {"torchvision": write_fer2013},
    "OxfordIIITPet": {"torchvision": write_oxford_pets},
    "STL10": {"torchvision": write_stl10},
    "CIFAR100": {"torchvision": lambda root, **kw: write_cifar(root, hundred=True, **kw)},
    "CIFAR10": {"torchvision": write_cifar},
    "Food101": {"torchvision": write_food101},
    "FashionMNIST": {"torchvision": lambda root, **kw: write_mnist_like(root, "FashionMNIST", **kw)},
    "EMNIST": {
        "torchvision": lambda root, **kw: write_mnist_like(
            root, "EMNIST", prefixes=("emnist-digits-train", "emnist-digits-test"), **kw
        )
    },
    "KMNIST": {"torchvision": lambda root, **kw: write_mnist_like(root, "KMNIST", **kw)},
    "RenderedSST2": {"torchvision": write_rendered_sst2},
    "ImageNet-R": {"folders": write_imagenet_r},
    "DomainNet": {"lists": write_domainnet},
    "PACS": {"folders": write_pacs},
    "OfficeHome": {"folders": write_office_home},
}


def write_fake(dataset: str, root: str | Path, layout: str | None = None, **kwargs) -> None:
    """Write a tiny ``dataset`` under ``root`` in ``layout`` (default: its first writer)."""
    writers = WRITERS[dataset]
    writers[layout or next(iter(writers))](Path(root), **kwargs)


# ---------------------------------------------------------------------------------------------
# A tiny open_clip architecture, to exercise the real-model code paths without real weights

TINY_CLIP = "ww-fake-tiny-vit"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 48, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip() -> str:
    """Register :data:`TINY_CLIP` with open_clip (as ``benchmark.toy`` registers its model) and return its name."""
    import tempfile

    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        with tempfile.TemporaryDirectory(prefix="ww-fake-") as tmp:
            path = Path(tmp) / f"{TINY_CLIP}.json"
            path.write_text(json.dumps(TINY_CLIP_CONFIG))
            open_clip.add_model_config(path)
    return TINY_CLIP


def save_tiny_clip(path: str | Path, seed: int = 0, quick_gelu: bool = False):
    """Write a random :data:`TINY_CLIP` checkpoint (safetensors, or torch for ``.pt``) and return the model."""
    import logging

    import open_clip
    import torch

    register_tiny_clip()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(TINY_CLIP, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.disable(previous)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return model.eval()
