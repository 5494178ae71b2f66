"""Broken datasets under the data root: one rule, refused with the file or folder named and the fix.

The rule (README, "Failure modes"): a missing root, split or split list, an empty class folder, a
listed image that is absent and an image that cannot be decoded all refuse the split. Nothing is
skipped silently: a test set shorter than the papers' would make results incomparable. Unreadable
images are all counted and named in one message; deleting them (folder layouts) is the user's
explicit decision, after which the split is read without them.
"""

from __future__ import annotations

import pytest

from benchmark.data import DatasetMalformedError, DatasetMissingError, fake
from benchmark.data import loaders as data
from benchmark.data.images import UnreadableImagesError
from benchmark.results.storage import StorageRoot
from benchmark.spec.schema import DataSpec
from benchmark.trials import eval_cache


def test_a_missing_data_root_names_the_layouts_and_how_to_obtain_the_data(tmp_path):
    with pytest.raises(DatasetMissingError) as info:
        data.check_task_data("EuroSAT", tmp_path / "nowhere")
    message = str(info.value)
    assert f"not found under data root {tmp_path / 'nowhere'}" in message
    assert "EuroSAT_splits/train/<class>" in message and "To obtain it" in message


@pytest.mark.parametrize(
    "dataset, layout, remove, expected",
    [
        ("DTD", "folders", "dtd/val", "dtd/ has no test/val folder → re-run the preparation script"),
        ("DomainNet", "lists", "domainnet/sketch_test.txt", "split lists missing: sketch_test.txt"),
        ("RESISC45", "lists", "resisc45/resisc45-test.txt", "split lists missing: resisc45-test.txt"),
    ],
    ids=["folder-split", "domainnet-list", "resisc45-list"],
)
def test_a_missing_split_is_refused_by_the_preflight(tmp_path, dataset, layout, remove, expected):
    import shutil

    fake.write_fake(dataset, tmp_path, layout)
    target = tmp_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    task = f"{dataset}/{data.domains(dataset)[0]}" if data.domains(dataset) else dataset
    with pytest.raises(DatasetMalformedError, match=expected.replace("(", r"\(")):
        data.check_task_data(task, tmp_path)


@pytest.mark.parametrize(
    "dataset, layout, folder",
    [
        ("DTD", "folders", "dtd/train/banded"),
        ("PACS", "folders", "PACS/kfold/sketch/dog"),
        ("RESISC45", "lists", "resisc45/NWPU-RESISC45/airport"),
    ],
    ids=["split-folders", "domain-folders", "listed-folders"],
)
def test_an_empty_class_folder_refuses_the_split_naming_it(tmp_path, dataset, layout, folder):
    fake.write_fake(dataset, tmp_path, layout)
    for image in (tmp_path / folder).iterdir():
        image.unlink()
    with pytest.raises(DatasetMalformedError) as info:
        data.open_split(dataset, "train", tmp_path)
    assert f"class folder {tmp_path / folder} holds no images" in str(info.value)
    assert "re-extract the archive" in str(info.value)


def test_a_listed_image_that_is_absent_is_refused(tmp_path):
    fake.write_fake("RESISC45", tmp_path, "lists")
    (tmp_path / "resisc45/NWPU-RESISC45/airport/airport_test000.jpg").unlink()
    with pytest.raises(DatasetMalformedError, match=r"1 of \d+ images listed in .*resisc45-test.txt are not under"):
        data.open_split("RESISC45", "test", tmp_path)
    data.open_split("RESISC45", "train", tmp_path)  # the other split does not list it


def _break_two_images(root) -> list[str]:
    """Overwrite one test image with garbage and truncate another; return their keys."""
    images = sorted((root / "EuroSAT_splits" / "test").rglob("*.jpg"))
    images[1].write_bytes(b"this is not a jpeg")
    images[4].write_bytes(images[4].read_bytes()[:40])
    return [p.relative_to(root).as_posix() for p in (images[1], images[4])]


def test_undecodable_images_are_all_named_and_the_split_is_not_cached(tmp_path):
    root, storage = tmp_path / "data", StorageRoot.at(tmp_path / "root").ensure()
    fake.write_fake("EuroSAT", root, "folders", per_class=4)
    n_test = len(data.open_split("EuroSAT", "test", root))
    broken = _break_two_images(root)
    with pytest.raises(UnreadableImagesError) as info:
        eval_cache.ensure_split(storage, "EuroSAT", "test", DataSpec(), resolution=24, root=root)
    message = str(info.value)
    assert f"2 of {n_test} images of EuroSAT test under {root} cannot be decoded" in message
    assert all(key in message for key in broken) and "refused rather than silently shortened" in message
    folder = eval_cache.cache_folder(storage, "EuroSAT", "test", DataSpec(), 24)
    assert not (folder / "images.npy").exists()
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temp debris

    for key in broken:  # the documented fix for folder layouts
        (root / key).unlink()
    images, labels = eval_cache.load_split(storage, "EuroSAT", "test", DataSpec(), resolution=24, root=root)
    assert len(images) == len(labels) == n_test - 2


def test_an_image_a_split_list_names_but_the_disk_lacks_counts_as_unreadable(tmp_path):
    fake.write_fake("DomainNet", tmp_path, "lists")
    lines = (tmp_path / "domainnet" / "sketch_test.txt").read_text().splitlines()
    listed = lines[0].split()[0]
    (tmp_path / "domainnet" / listed).unlink()
    with pytest.raises(
        UnreadableImagesError,
        match=f"1 of {len(lines)} images .* cannot be decoded: domainnet/{listed} \\(FileNotFoundError",
    ):
        data.load_split("DomainNet/sketch", "test", DataSpec(), resolution=24, root=tmp_path)


def test_a_data_error_found_on_a_ray_worker_reaches_the_driver_as_itself(ray_session, tmp_path):
    from benchmark.pipeline import _get_input_checked

    root = tmp_path / "data"
    fake.write_fake("EuroSAT", root, "folders", per_class=4)
    broken = _break_two_images(root)

    @ray_session.remote(num_cpus=0)
    def cache_test_split(storage_root: str, data_root: str):
        eval_cache.ensure_split(
            StorageRoot.at(storage_root), "EuroSAT", "test", DataSpec(), resolution=24, root=data_root
        )

    with pytest.raises(UnreadableImagesError) as info:
        _get_input_checked(cache_test_split.remote(str(tmp_path / "root"), str(root)))
    assert type(info.value) is UnreadableImagesError and broken[0] in str(info.value)
    assert "Traceback" not in str(info.value)
