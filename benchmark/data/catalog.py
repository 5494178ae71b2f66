"""The real datasets of the paper's three setups (docs/METHODS.md §3): names, heads' words, layouts, sources.

One :class:`RealDataset` per dataset, under the name docs/METHODS.md uses (case-sensitive: ``SUN397``,
``Cars``, ...). Each lists the on-disk layouts it is read from, tried in order, and where the data
comes from: a torchvision download (``run_bench.py data prepare NAME``) or manual instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmark.data import classnames as names
from benchmark.data import templates as prompts
from benchmark.data.layouts import (
    DatasetLayout,
    DomainNetLayout,
    HashSplitLayout,
    ListedFolderLayout,
    SplitFoldersLayout,
    SUN397PartitionLayout,
    TorchvisionLayout,
)


@dataclass(frozen=True)
class Download:
    """How ``data prepare`` fetches a dataset with torchvision: ``cls(root=<data root>/subdir, download=True, **kw)``
    for each ``kw`` of ``calls``, then each ``(url, folder)`` of ``archives`` (extracted into ``folder``)."""

    cls: str
    subdir: str = ""
    calls: tuple[dict, ...] = ({},)
    archives: tuple[tuple[str, str], ...] = ()
    host: str = ""
    #: the top-level folder the download creates under the data root (what to copy elsewhere)
    folder: str = ""


@dataclass(frozen=True)
class RealDataset:
    name: str
    n_classes: int
    layouts: tuple[DatasetLayout, ...]
    #: class names in label order (or a function returning them); None when they are read from the
    #: data (see classnames.py)
    classnames: tuple[str, ...] | Callable[[], tuple[str, ...]] | None
    templates: tuple[str, ...] | Callable[[], tuple[str, ...]]
    domains: tuple[str, ...] = ()
    download: Download | None = None
    #: how to obtain the data when ``data prepare`` cannot (shown by ``data check``)
    obtain: str = ""
    #: which of the paper's setups use it (documentation and ``data check`` grouping)
    used_by: tuple[str, ...] = field(default=())

    def prompt_templates(self) -> tuple[str, ...]:
        return self.templates() if callable(self.templates) else self.templates

    def shipped_classnames(self) -> tuple[str, ...] | None:
        """Class names known without the data (None: read them from the data root)."""
        return self.classnames() if callable(self.classnames) else self.classnames


def _tv(
    cls: str,
    subdir: str,
    train: Sequence[dict],
    test: Sequence[dict],
    markers: Sequence[str],
    requires: Sequence[str] = (),
    labels: Callable[[Any, Path], np.ndarray] | None = None,
) -> TorchvisionLayout:
    return TorchvisionLayout(cls, subdir, {"train": list(train), "test": list(test)}, markers, requires, labels)


def _dtd_labels(ds: Any, root: Path) -> np.ndarray:
    # torchvision numbers DTD's classes per split file; label by folder name so every split agrees
    return np.asarray([names.DTD.index(Path(p).parent.name) for p in ds._image_files], dtype=np.int64)


def _pcam_labels(ds: Any, root: Path) -> np.ndarray:
    # torchvision reads PCAM's targets one index at a time; read the whole target array at once
    import h5py

    targets = ds._FILES[ds._split]["targets"][0]
    with h5py.File(root / "pcam" / targets) as fh:
        return np.asarray(fh["y"][:], dtype=np.int64).reshape(-1)


def _cars_names(root: Path) -> tuple[str, ...]:
    from scipy.io import loadmat

    meta = loadmat(str(root / "stanford_cars" / "devkit" / "cars_meta.mat"), squeeze_me=True)
    return tuple(str(n) for n in meta["class_names"].tolist())


class _CarsLayout(TorchvisionLayout):
    def classnames(self, root: Path) -> tuple[str, ...] | None:
        return _cars_names(root)


def _mnist_like(
    cls: str, folder: str, prefix_train: str, prefix_test: str, extra: dict | None = None, subdir: str = ""
) -> TorchvisionLayout:
    extra = extra or {}
    return _tv(
        cls,
        subdir,
        [{"train": True, **extra}],
        [{"train": False, **extra}],
        [f"{folder}/raw/{prefix_train}-images-idx3-ubyte", f"{folder}/raw/{prefix_test}-images-idx3-ubyte"],
    )


_MTL8 = ("mtl8", "mtl14", "mtl20")
_MTL14 = ("mtl14", "mtl20")
_MTL20 = ("mtl20",)


def _build() -> dict[str, RealDataset]:
    sets = [
        # ---- the 8 MTL datasets ------------------------------------------------------------
        RealDataset(
            "SUN397",
            397,
            (SplitFoldersLayout("sun397", None, name_of=lambda f: f[2:].replace("_", " ")), SUN397PartitionLayout()),
            None,
            prompts.PHOTO,
            download=Download(
                "SUN397",
                host="vision.princeton.edu",
                folder="SUN397",
                archives=(("https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip", "SUN397"),),
            ),
            obtain="run_bench.py data prepare SUN397 (37 GB), or the task-vectors sun397/{train,val} folders",
            used_by=_MTL8,
        ),
        RealDataset(
            "Cars",
            196,
            (
                _CarsLayout(
                    "StanfordCars",
                    "",
                    {"train": [{"split": "train"}], "test": [{"split": "test"}]},
                    [
                        "stanford_cars/devkit/cars_meta.mat",
                        "stanford_cars/cars_train",
                        "stanford_cars/cars_test",
                        "stanford_cars/cars_test_annos_withlabels.mat",
                    ],
                    ("scipy",),
                ),
            ),
            None,
            prompts.CARS,
            obtain="torchvision cannot download Stanford Cars any more: get the Kaggle copy "
            "(jessicali9530/stanford-cars-dataset + cars_test_annos_withlabels.mat) and arrange it as "
            "stanford_cars/",
            used_by=_MTL8,
        ),
        RealDataset(
            "RESISC45",
            45,
            (
                ListedFolderLayout(
                    "resisc45",
                    "NWPU-RESISC45",
                    names.RESISC45_FOLDERS,
                    {"train": "resisc45-train.txt", "test": "resisc45-test.txt"},
                ),
            ),
            names.RESISC45,
            prompts.RESISC45,
            obtain="NWPU-RESISC45.rar (dataset page) extracted to resisc45/NWPU-RESISC45, plus "
            "resisc45-{train,val,test}.txt from storage.googleapis.com/remote_sensing_representations/",
            used_by=_MTL8,
        ),
        RealDataset(
            "EuroSAT",
            10,
            (
                SplitFoldersLayout("EuroSAT_splits", names.EUROSAT_FOLDERS),
                HashSplitLayout("eurosat/2750", names.EUROSAT_FOLDERS, test_fraction=0.1, salt="EuroSAT"),
            ),
            names.EUROSAT,
            prompts.EUROSAT,
            download=Download("EuroSAT", host="huggingface.co", folder="eurosat"),
            obtain="run_bench.py data prepare EuroSAT, or the task-vectors EuroSAT_splits/ folders",
            used_by=_MTL8,
        ),
        RealDataset(
            "SVHN",
            10,
            tuple(
                _tv(
                    "SVHN",
                    sub,
                    [{"split": "train"}],
                    [{"split": "test"}],
                    ["train_32x32.mat", "test_32x32.mat"],
                    ("scipy",),
                )
                for sub in ("svhn", "SVHN")
            ),
            names.SVHN,
            prompts.NUMBER,
            download=Download(
                "SVHN", "svhn", ({"split": "train"}, {"split": "test"}), host="ufldl.stanford.edu", folder="svhn"
            ),
            obtain="run_bench.py data prepare SVHN",
            used_by=_MTL8,
        ),
        RealDataset(
            "GTSRB",
            43,
            (
                _tv(
                    "GTSRB",
                    "",
                    [{"split": "train"}],
                    [{"split": "test"}],
                    ["gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv"],
                ),
            ),
            names.GTSRB,
            prompts.GTSRB,
            download=Download("GTSRB", "", ({"split": "train"}, {"split": "test"}), host="sid.erda.dk", folder="gtsrb"),
            obtain="run_bench.py data prepare GTSRB",
            used_by=_MTL8,
        ),
        RealDataset(
            "MNIST",
            10,
            (_mnist_like("MNIST", "MNIST", "train", "t10k"),),
            names.MNIST,
            prompts.NUMBER,
            download=Download(
                "MNIST", "", ({"train": True}, {"train": False}), host="ossci-datasets.s3.amazonaws.com", folder="MNIST"
            ),
            obtain="run_bench.py data prepare MNIST",
            used_by=_MTL8,
        ),
        RealDataset(
            "DTD",
            47,
            (
                SplitFoldersLayout("dtd", names.DTD),
                _tv(
                    "DTD",
                    "",
                    [{"split": "train"}, {"split": "val"}],
                    [{"split": "test"}],
                    ["dtd/dtd/images", "dtd/dtd/labels/train1.txt", "dtd/dtd/labels/test1.txt"],
                    labels=_dtd_labels,
                ),
            ),
            names.DTD,
            prompts.DTD,
            download=Download("DTD", "", ({"split": "train"},), host="www.robots.ox.ac.uk", folder="dtd"),
            obtain="run_bench.py data prepare DTD, or the task-vectors dtd/{train,val} folders",
            used_by=_MTL8,
        ),
        # ---- the 14-task extension ---------------------------------------------------------
        RealDataset(
            "Flowers102",
            102,
            (
                _tv(
                    "Flowers102",
                    "",
                    [{"split": "train"}],
                    [{"split": "test"}],
                    ["flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"],
                    ("scipy",),
                ),
            ),
            names.FLOWERS102,
            prompts.FLOWERS102,
            download=Download(
                "Flowers102", "", ({"split": "train"},), host="www.robots.ox.ac.uk", folder="flowers-102"
            ),
            obtain="run_bench.py data prepare Flowers102",
            used_by=_MTL14,
        ),
        RealDataset(
            "PCAM",
            2,
            (
                _tv(
                    "PCAM",
                    "",
                    [{"split": "train"}],
                    [{"split": "test"}],
                    [f"pcam/camelyonpatch_level_2_split_{s}_{xy}.h5" for s in ("train", "test") for xy in ("x", "y")],
                    ("h5py",),
                    labels=_pcam_labels,
                ),
            ),
            names.PCAM,
            prompts.PCAM,
            download=Download(
                "PCAM", "", ({"split": "train"}, {"split": "test"}), host="drive.google.com", folder="pcam"
            ),
            obtain="pip install h5py; run_bench.py data prepare PCAM",
            used_by=_MTL14,
        ),
        RealDataset(
            "FER2013",
            7,
            tuple(
                _tv("FER2013", "", [{"split": "train"}], [{"split": "test"}], [f"fer2013/{csv}"])
                for csv in ("fer2013.csv", "icml_face_data.csv")
            ),
            names.FER2013,
            prompts.FER2013,
            obtain="Kaggle: challenges-in-representation-learning-facial-expression-recognition-challenge "
            "(fer2013.csv or icml_face_data.csv) into fer2013/",
            used_by=_MTL14,
        ),
        RealDataset(
            "OxfordIIITPet",
            37,
            (
                _tv(
                    "OxfordIIITPet",
                    "",
                    [{"split": "trainval"}],
                    [{"split": "test"}],
                    [
                        "oxford-iiit-pet/images",
                        "oxford-iiit-pet/annotations/trainval.txt",
                        "oxford-iiit-pet/annotations/test.txt",
                    ],
                ),
            ),
            names.OXFORD_PETS,
            prompts.OXFORD_PETS,
            download=Download(
                "OxfordIIITPet", "", ({"split": "trainval"},), host="www.robots.ox.ac.uk", folder="oxford-iiit-pet"
            ),
            obtain="run_bench.py data prepare OxfordIIITPet",
            used_by=_MTL14,
        ),
        RealDataset(
            "STL10",
            10,
            (
                _tv(
                    "STL10",
                    "",
                    [{"split": "train"}],
                    [{"split": "test"}],
                    ["stl10_binary/train_X.bin", "stl10_binary/test_X.bin"],
                ),
            ),
            names.STL10,
            prompts.PHOTO,
            download=Download("STL10", "", ({"split": "train"},), host="ai.stanford.edu", folder="stl10_binary"),
            obtain="run_bench.py data prepare STL10",
            used_by=_MTL14,
        ),
        RealDataset(
            "CIFAR100",
            100,
            (
                _tv(
                    "CIFAR100",
                    "",
                    [{"train": True}],
                    [{"train": False}],
                    ["cifar-100-python/train", "cifar-100-python/test"],
                ),
            ),
            names.CIFAR100,
            prompts.CIFAR,
            download=Download("CIFAR100", "", ({"train": True},), host="www.cs.toronto.edu", folder="cifar-100-python"),
            obtain="run_bench.py data prepare CIFAR100",
            used_by=(*_MTL14, "cil"),
        ),
        # ---- the 20-task extension ---------------------------------------------------------
        RealDataset(
            "CIFAR10",
            10,
            (
                _tv(
                    "CIFAR10",
                    "",
                    [{"train": True}],
                    [{"train": False}],
                    ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"],
                ),
            ),
            names.CIFAR10,
            prompts.CIFAR,
            download=Download(
                "CIFAR10", "", ({"train": True},), host="www.cs.toronto.edu", folder="cifar-10-batches-py"
            ),
            obtain="run_bench.py data prepare CIFAR10",
            used_by=_MTL20,
        ),
        RealDataset(
            "Food101",
            101,
            (
                _tv(
                    "Food101",
                    "",
                    [{"split": "train"}],
                    [{"split": "test"}],
                    ["food-101/images", "food-101/meta/train.json", "food-101/meta/test.json"],
                ),
            ),
            names.FOOD101,
            prompts.FOOD101,
            download=Download("Food101", "", ({"split": "train"},), host="data.vision.ee.ethz.ch", folder="food-101"),
            obtain="run_bench.py data prepare Food101",
            used_by=_MTL20,
        ),
        RealDataset(
            "FashionMNIST",
            10,
            (_mnist_like("FashionMNIST", "FashionMNIST", "train", "t10k"),),
            names.FASHION_MNIST,
            prompts.PHOTO,
            download=Download(
                "FashionMNIST",
                "",
                ({"train": True}, {"train": False}),
                host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                folder="FashionMNIST",
            ),
            obtain="run_bench.py data prepare FashionMNIST",
            used_by=_MTL20,
        ),
        RealDataset(
            "EMNIST",
            10,
            tuple(
                _mnist_like("EMNIST", "EMNIST", "emnist-digits-train", "emnist-digits-test", {"split": "digits"}, sub)
                for sub in ("", "EMNIST")
            ),
            names.EMNIST,
            prompts.EMNIST,
            download=Download(
                "EMNIST", "", ({"split": "digits", "train": True},), host="biometrics.nist.gov", folder="EMNIST"
            ),
            obtain="run_bench.py data prepare EMNIST (split 'digits')",
            used_by=_MTL20,
        ),
        RealDataset(
            "KMNIST",
            10,
            (_mnist_like("KMNIST", "KMNIST", "train", "t10k"),),
            names.KMNIST,
            prompts.KMNIST,
            download=Download(
                "KMNIST", "", ({"train": True}, {"train": False}), host="codh.rois.ac.jp", folder="KMNIST"
            ),
            obtain="run_bench.py data prepare KMNIST",
            used_by=_MTL20,
        ),
        RealDataset(
            "RenderedSST2",
            2,
            tuple(
                _tv(
                    "RenderedSST2",
                    sub,
                    [{"split": "train"}],
                    [{"split": "test"}],
                    ["rendered-sst2/train", "rendered-sst2/test"],
                )
                for sub in ("", "RenderedSST2")
            ),
            names.RENDERED_SST2,
            prompts.RENDERED_SST2,
            download=Download(
                "RenderedSST2", "", ({"split": "train"},), host="openaipublic.azureedge.net", folder="rendered-sst2"
            ),
            obtain="run_bench.py data prepare RenderedSST2",
            used_by=_MTL20,
        ),
        # ---- continual learning and domain generalisation -----------------------------------
        RealDataset(
            "ImageNet-R",
            200,
            (
                HashSplitLayout(
                    "imagenet-r",
                    names.imagenet_r_wnids,
                    test_fraction=0.2,
                    salt="ImageNet-R",
                    domain_of_file=lambda n: n.rsplit("_", 1)[0],
                ),
            ),
            names.imagenet_r_names,
            prompts.imagenet,
            domains=names.IMAGENET_R_RENDITIONS,
            obtain="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar extracted to imagenet-r/",
            used_by=("cil", "dg"),
        ),
        RealDataset(
            "DomainNet",
            345,
            (DomainNetLayout(("domainnet", "DomainNet"), names.DOMAINNET_DOMAINS, 345),),
            None,
            prompts.imagenet,
            domains=names.DOMAINNET_DOMAINS,
            obtain="the six domain zips and <domain>_{train,test}.txt from ai.bu.edu/M3SDA, extracted to domainnet/",
            used_by=("dg", "cil"),
        ),
        RealDataset(
            "PACS",
            7,
            (
                HashSplitLayout(
                    ("PACS/kfold", "PACS", "pacs_data/pacs_data"),
                    names.PACS,
                    test_fraction=0.2,
                    salt="PACS",
                    domain_dirs={d: (d,) for d in names.PACS_DOMAINS},
                ),
            ),
            names.PACS,
            prompts.imagenet,
            domains=names.PACS_DOMAINS,
            obtain="the PACS image folders (kfold/ of the official release) under PACS/",
            used_by=("dg",),
        ),
        RealDataset(
            "OfficeHome",
            65,
            (
                HashSplitLayout(
                    ("OfficeHome", "OfficeHomeDataset_10072016", "office_home"),
                    None,
                    test_fraction=0.2,
                    salt="OfficeHome",
                    name_of=lambda f: f.replace("_", " ").lower(),
                    domain_dirs={
                        "Art": ("Art",),
                        "Clipart": ("Clipart",),
                        "Product": ("Product",),
                        "Real_World": ("Real_World", "Real World"),
                    },
                ),
            ),
            None,
            prompts.imagenet,
            domains=names.OFFICE_HOME_DOMAINS,
            obtain="OfficeHomeDataset_10072016.zip (hemanthdv.github.io/officehome-dataset) extracted to OfficeHome/",
            used_by=("dg",),
        ),
    ]
    return {d.name: d for d in sets}


REAL_DATASETS: dict[str, RealDataset] = _build()

#: The dataset lists of the paper's MTL benchmarks (TALL masks' order: 8, then 14, then 20 tasks).
MTL8 = ("SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD")
MTL14 = (*MTL8, "Flowers102", "PCAM", "FER2013", "OxfordIIITPet", "STL10", "CIFAR100")
MTL20 = (*MTL14, "CIFAR10", "Food101", "FashionMNIST", "EMNIST", "KMNIST", "RenderedSST2")
