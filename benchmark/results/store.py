"""Results as a Parquet dataset: one part file per trial, named by its key, written atomically.

The dataset under ``<root>/results`` is the leaderboard's single source of truth. Parts live in
Hive partitions ``model=<m>/setup=<s>/`` and are published atomically (temp + rename on disks, one
complete object on object stores), so a reader never sees a half-written part and re-running a
spec skips every key already present (resume). Reads and writes go through the root's
``pyarrow.fs`` filesystem, so the dataset may live on ``s3://`` as well as on a disk.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from benchmark.results.storage import RootPath, StorageRoot, atomic_write, filesystem_path, list_files, safe_name

SCHEMA = pa.schema(
    [
        # identity
        ("schema_version", pa.int32()),
        ("run_name", pa.string()),
        ("trial_key", pa.string()),
        ("spec_hash", pa.string()),
        ("bank_key", pa.string()),
        ("code_version", pa.string()),  # the key layout (benchmark.spec.keys.KEY_LAYOUT), not a method version
        ("host", pa.string()),
        ("started_at", pa.timestamp("ms", tz="UTC")),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        ("status", pa.string()),
        ("error", pa.string()),
        # axes
        ("model", pa.string()),
        ("pretrained", pa.string()),
        ("setup", pa.string()),
        ("setup_kind", pa.string()),
        ("finetune_mode", pa.string()),
        ("n_tasks", pa.int32()),
        ("merger", pa.string()),
        ("merger_params", pa.string()),
        ("pooling", pa.string()),
        ("collaborative", pa.bool_()),
        ("lambda_policy", pa.string()),
        ("lambdas", pa.list_(pa.float64())),
        ("lam", pa.float64()),
        ("seed", pa.int64()),
        # measures
        ("eval_task", pa.string()),
        ("n_examples", pa.int64()),
        ("n_correct", pa.int64()),
        ("accuracy", pa.float64()),
        ("expert_accuracy", pa.float64()),
        ("zeroshot_accuracy", pa.float64()),
        ("normalized_accuracy", pa.float64()),
        ("uses_test_data", pa.bool_()),
        ("merge_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("peak_memory_mb", pa.float64()),
        # provenance (schema 2; null in rows written before): the revisions the trial key hashed
        ("merger_revision", pa.int32()),
        ("pooling_revision", pa.int32()),
        ("eval_revision", pa.int32()),
        ("heads_revision", pa.int32()),
        ("finetune_revision", pa.int32()),
        ("revisions", pa.string()),  # all of them as JSON, with pretrain, toy_data and plugin source digests
        # schema 3: per-example outcomes (benchmark.report.paired) and DG's balanced accuracy
        ("balanced_accuracy", pa.float64()),
        ("correct_bits", pa.binary()),
    ]
)
"""Columns of every part. Parts written by an older schema lack the newest columns; they read as null."""

#: Columns that name the Hive partition folders (also stored inside each part, for plain readers).
PARTITION_COLUMNS = ("model", "setup")


def part_path(storage: StorageRoot, model: str, setup: str, trial_key: str) -> Path | RootPath:
    return storage.results / f"model={safe_name(model)}" / f"setup={safe_name(setup)}" / f"{trial_key}.parquet"


def write_part(storage: StorageRoot, rows: list[dict], trial_key: str) -> Path | RootPath:
    """Write one trial's rows as one part, atomically; an existing part for the key is replaced."""
    if not rows:
        raise ValueError(f"trial {trial_key} produced no rows")
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)
    path = part_path(storage, rows[0]["model"], rows[0]["setup"], trial_key)
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _parts(storage: StorageRoot) -> pads.Dataset | None:
    """The visible part files as one dataset on the root's filesystem (None when there are none).

    Listing once and scanning the listed files (rather than letting pyarrow discover the tree)
    keeps the dot-named temp files of interrupted writes out, on local disks and object stores alike.
    """
    files = list_files(storage.results, ".parquet")
    if not files:
        return None
    fs, _ = filesystem_path(storage.results)
    return pads.dataset([filesystem_path(f)[1] for f in files], schema=SCHEMA, format="parquet", filesystem=fs)


def trial_status(storage: StorageRoot) -> dict[str, str]:
    """Trial key → "ok" / "error" for every part present (the file name is the key)."""
    dataset = _parts(storage)
    if dataset is None:
        return {}
    statuses: dict[str, set] = {Path(file).stem: set() for file in dataset.files}
    for tagged in dataset.scanner(columns=["status"]).scan_batches():  # parallel reads, tagged by file
        statuses[Path(tagged.fragment.path).stem].update(tagged.record_batch.column("status").to_pylist())
    return {key: "ok" if found == {"ok"} else "error" for key, found in statuses.items()}


def read_results(storage: StorageRoot) -> pa.Table:
    """Every row of every part (empty table with the schema when there are none).

    Parts written by an older schema lack the newer columns; the dataset's explicit schema reads
    them as nulls (e.g. no ``correct_bits`` before schema 2: reported without intervals).
    """
    dataset = _parts(storage)
    return SCHEMA.empty_table() if dataset is None else dataset.to_table()
