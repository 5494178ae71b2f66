"""Storage roots beyond a local folder: URIs through pyarrow.fs, object-store semantics, shared roots.

No cloud is reachable from the test machine, so the object store is a pyarrow filesystem held in
memory with S3's rules: an object appears only when its upload stream closes, nothing can be
renamed, folders are just key prefixes. It records every completed upload, so the tests can see
in what order the harness publishes.
"""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import torch
from safetensors.torch import load, save_file

from benchmark import cli
from benchmark.experts import store as expert_store
from benchmark.model import pretrained as models
from benchmark.results import storage as storage_module
from benchmark.results import store as results
from benchmark.results.storage import CachePath, RootPath, StorageRoot, atomic_write
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import ModelSpec, parse_spec
from benchmark.toy import create_toy_model
from tests.benchmark.results.test_store import _row
from tests.conftest import tiny_spec_dict


class _Upload(io.BytesIO):
    def __init__(self, store: "ObjectStore", key: str):
        super().__init__()
        self._store, self._key = store, key

    def close(self) -> None:
        if not self.closed:
            self._store.objects[self._key] = self.getvalue()
            self._store.puts.append(self._key)
        super().close()


class ObjectStore(pafs.FileSystemHandler):
    """An S3-like bucket in memory: whole objects only, no rename, implicit folders."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []

    def get_type_name(self):
        return "fake-s3"

    def normalize_path(self, path):
        return path.strip("/")

    def _info(self, path):
        path = path.strip("/")
        if path in self.objects:
            return pafs.FileInfo(path, pafs.FileType.File, size=len(self.objects[path]))
        if any(key.startswith(path + "/") for key in self.objects):
            return pafs.FileInfo(path, pafs.FileType.Directory)
        return pafs.FileInfo(path, pafs.FileType.NotFound)

    def get_file_info(self, paths):
        return [self._info(p) for p in paths]

    def get_file_info_selector(self, selector):
        base = selector.base_dir.strip("/")
        if self._info(base).type == pafs.FileType.NotFound:
            if selector.allow_not_found:
                return []
            raise FileNotFoundError(base)
        keys = [k for k in self.objects if k.startswith(base + "/")]
        folders = {
            "/".join(k.split("/")[: i + 1]) for k in keys for i in range(len(base.split("/")), len(k.split("/")) - 1)
        }
        infos = [self._info(k) for k in keys] + [pafs.FileInfo(f, pafs.FileType.Directory) for f in folders]
        if not selector.recursive:
            depth = len(base.split("/")) + 1
            infos = [i for i in infos if len(i.path.split("/")) == depth]
        return infos

    def create_dir(self, path, recursive):
        pass  # folders are key prefixes

    def delete_dir(self, path):
        self.delete_dir_contents(path, False)

    def delete_dir_contents(self, path, missing_dir_ok):
        for key in [k for k in self.objects if k.startswith(path.strip("/") + "/")]:
            del self.objects[key]

    def delete_root_dir_contents(self):
        self.objects.clear()

    def delete_file(self, path):
        if self.objects.pop(path.strip("/"), None) is None:
            raise FileNotFoundError(path)

    def move(self, src, dest):
        raise OSError("an object store has no atomic rename")

    def copy_file(self, src, dest):
        self.objects[dest.strip("/")] = self.objects[src.strip("/")]

    def open_input_stream(self, path):
        if path.strip("/") not in self.objects:
            raise FileNotFoundError(path)
        return pa.BufferReader(self.objects[path.strip("/")])

    open_input_file = open_input_stream

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_Upload(self, path.strip("/")), mode="w")

    def open_append_stream(self, path, metadata):
        raise OSError("objects cannot be appended to")


@pytest.fixture
def bucket(tmp_path):
    """An object-store root (``fake-s3://bucket/ww``) with its node-local cache under tmp_path."""
    store = ObjectStore()
    root = StorageRoot.on(pafs.PyFileSystem(store), "bucket/ww", scheme="fake-s3", cache_dir=tmp_path / "node-a")
    return store, root


def _expert_job():
    return build_plan(parse_spec(tiny_spec_dict())).experts[0]


def _visual_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 2, 2, generator=generator), "ln.bias": torch.randn(4, generator=generator)}


def test_file_uri_root_routes_through_pyarrow_and_writes_the_same_tree_as_a_plain_path(tmp_path):
    plain = StorageRoot.at(tmp_path / "plain").ensure()
    uri = StorageRoot.at(f"file://{tmp_path / 'uri'}").ensure()
    assert isinstance(uri.experts, RootPath) and uri.on_local_disk and not plain.is_uri
    assert str(uri.runs / "grid") == f"file://{tmp_path / 'uri' / 'runs' / 'grid'}"  # Ray's storage_path
    job, state, rows = _expert_job(), _visual_state(), [_row("k1", "a", 0.5)]
    for root in (plain, uri):
        expert_store.save_expert(job, root, state, {"test_accuracy": 0.5})
        results.write_part(root, rows, "k1")

    def tree(folder):
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    a, b = tree(tmp_path / "plain"), tree(tmp_path / "uri")
    assert set(a) == set(b) and any(name.endswith(".parquet") for name in a)
    assert not any(name.rsplit("/", 1)[-1].startswith(".") for name in b)  # no temp debris, no probe
    for name in a:
        if name.endswith(".safetensors"):  # its header's key order is not fixed: compare what it holds
            assert {k: v.tolist() for k, v in load(a[name]).items()} == {
                k: v.tolist() for k, v in load(b[name]).items()
            }
        elif not name.endswith(".manifest.json"):  # manifests carry the host and finish time
            assert a[name] == b[name], name
    assert uri.cache == tmp_path / "uri" / "cache"  # a file:// root is on a disk: memory-mappable in place
    loaded = expert_store.load_expert(job, uri)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert results.read_results(uri).equals(results.read_results(plain))


def test_expert_on_an_object_store_is_uploaded_weights_first_then_manifest(bucket):
    store, root = bucket
    root.ensure()
    job, state = _expert_job(), _visual_state()
    assert not expert_store.is_done(job, root)
    expert_store.save_expert(job, root, state, {"test_accuracy": 0.75})
    weights, manifest = (p.path for p in (job.path(root), job.manifest_path(root)))
    assert store.puts[-2:] == [weights, manifest]  # one upload each, the manifest last; no rename exists
    assert expert_store.read_manifest(job, root)["metrics"]["test_accuracy"] == 0.75
    loaded = expert_store.load_expert(job, root)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # weights without a manifest (an upload cut short) are not an expert
    del store.objects[manifest]
    assert not expert_store.is_done(job, root)


def test_a_failed_write_leaves_no_object_behind(bucket):
    store, root = bucket
    target = results.part_path(root, "m", "s", "k9")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"PAR1 half a file")
            raise RuntimeError("killed mid-write")
    assert store.objects == {} and not target.exists()


def test_results_round_trip_on_an_object_store(bucket):
    store, root = bucket
    results.write_part(root, [_row("k1", "a", 0.5), _row("k1", "b", 0.7)], "k1")
    results.write_part(root, [_row("k2", "a", 0.1, status="error", error="boom")], "k2")
    results.write_part(root, [_row("k1", "a", 0.6), _row("k1", "b", 0.8)], "k1")  # a rerun replaces
    store.objects["bucket/ww/results/model=m/setup=s/.tmp-dead-k3.parquet"] = b"garbage"  # debris
    assert all(key.startswith("bucket/ww/results/model=m/setup=s/") for key in store.objects)
    assert results.trial_status(root) == {"k1": "ok", "k2": "error"}
    table = results.read_results(root)
    assert sorted(table.column("accuracy").to_pylist()) == [0.1, 0.6, 0.8]


def test_object_store_root_caches_locally_and_a_second_node_fetches_theta0_instead_of_rebuilding(bucket, tmp_path):
    store, node_a = bucket
    node_b = StorageRoot.on(node_a.fs, "bucket/ww", scheme="fake-s3", cache_dir=tmp_path / "node-b")
    spec = ModelSpec(**tiny_spec_dict()["models"][0])
    assert isinstance(node_a.cache, CachePath) and node_a.cache == tmp_path / "node-a"
    # node A builds θ0 the way ensure_base_model stores it; node B must load exactly those bytes
    theta0 = models._toy_checkpoint(spec, node_a)
    model = create_toy_model(seed=123)

    with atomic_write(theta0) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    key = f"bucket/ww/cache/{theta0.relative_to(tmp_path / 'node-a').as_posix()}"
    assert key in store.objects
    with pytest.raises(models.MissingWeightsError):  # before node A published it, node B had nothing
        models.load_base_model(
            spec,
            StorageRoot.on(
                pafs.PyFileSystem(ObjectStore()), "bucket/ww", scheme="fake-s3", cache_dir=tmp_path / "node-c"
            ),
        )
    base = models.load_base_model(spec, node_b)
    assert all(torch.equal(base.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert (tmp_path / "node-b" / theta0.relative_to(tmp_path / "node-a")).is_file()
    # eval tensors are per node: deterministic, large, rebuilt rather than uploaded
    with atomic_write(node_a.cache / "tensors" / "digits-test-x" / "images.npy") as tmp:
        tmp.write_bytes(b"npy")
    assert not any("/tensors/" in k for k in store.objects)


def test_cloud_root_without_credentials_is_one_line_naming_the_fix(monkeypatch, tmp_path, capsys):
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("GOOGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(storage_module, "_on_cloud_vm", lambda vendor: False)
    assert cli.main(["report", "s3://bucket/ww"]) == 2
    assert cli.main(["run", "--dry-run", "--root", "s3://bucket/ww"]) == 2
    out = capsys.readouterr().out
    assert "Traceback" not in out and out.count("error:") == 2
    assert "no AWS credentials found; set AWS_ACCESS_KEY_ID" in " ".join(out.split())
    assert cli.main(["report", "gs://bucket/ww"]) == 2
    assert "no Google Cloud credentials found; set GOOGLE_APPLICATION_CREDENTIALS" in " ".join(
        capsys.readouterr().out.split()
    )


def test_unknown_uri_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="pyarrow cannot open it.*s3://bucket/prefix"):
        StorageRoot.at("nosuchfs://bucket/ww")


# --- a node-local root on a multi-node cluster ---------------------------------------------------------


def _honest_probe(visible_on: set[str], calls: list):
    """Reads the marker like the real probe, but only 'sees' the disk on the nodes in ``visible_on``."""

    def probe(marker: str, token: str, node_ids: list[str]) -> dict[str, bool]:
        calls.append(marker)
        text = open(marker).read()
        return {node: node in visible_on and text == token for node in node_ids}

    return probe


def test_local_root_is_refused_when_a_node_cannot_see_it(tmp_path):
    root = StorageRoot.at(tmp_path / "root").ensure()
    calls = []
    with pytest.raises(ValueError, match=r"1 of 2 Ray nodes \(bbbbbbbb\).*NFS/EFS.*s3://"):
        storage_module.require_shared_root(root, ["a" * 16, "b" * 16], probe=_honest_probe({"a" * 16}, calls))
    assert len(calls) == 1 and not list((tmp_path / "root").glob(".node-probe-*"))  # marker cleaned up


def test_local_root_is_accepted_when_every_node_reads_the_token(tmp_path):
    root = StorageRoot.at(f"file://{tmp_path / 'root'}").ensure()  # a file:// URI is still one machine's disk
    calls = []
    storage_module.require_shared_root(root, ["a", "b"], probe=_honest_probe({"a", "b"}, calls))
    assert len(calls) == 1


def test_single_node_and_object_store_roots_are_not_probed(tmp_path, bucket):
    def probe(*_):
        raise AssertionError("probed")

    storage_module.require_shared_root(StorageRoot.at(tmp_path), ["only"], probe=probe)
    storage_module.require_shared_root(bucket[1], ["a", "b"], probe=probe)


def test_real_probe_tasks_see_a_local_root_on_the_session_cluster(ray_session, tmp_path):
    root = StorageRoot.at(tmp_path / "root").ensure()
    nodes = [n["NodeID"] for n in ray_session.nodes() if n["Alive"]]
    assert storage_module.nodes_without_root(root, nodes) == []
    assert storage_module.probe_nodes(str(tmp_path / "absent"), "token", nodes) == {n: False for n in nodes}
    storage_module.require_shared_root(root)
