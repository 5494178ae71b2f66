"""Preparing θ0, tensors and heads says what it has done, task by task, while it runs.

At real size this stage takes minutes per dataset (224 px tensors, the text tower over every class
and template); the driver prints each line the preparation task streams back.
"""

from __future__ import annotations


def test_prepare_reports_each_task_as_it_is_done(finished_tiny_run):
    spec, _, summary, console = finished_tiny_run
    text = console.export_text()
    model = spec.models[0].name
    assert f"{model}: θ0 loaded" in text
    tasks = spec.setups[0].tasks
    for i, task in enumerate(tasks, 1):
        where = f"{model} [{i}/{len(tasks)}] {task}:"
        assert f"{where} train tensors cached" in text
        assert f"{where} head computed" in text or f"{where} head already cached" in text
        assert f"{where} test tensors cached and zero-shot accuracy" in text
    # the lines arrive while the stage runs, before its closing line
    assert text.rindex(f"[{len(tasks)}/{len(tasks)}]") < text.index("θ0, tensors and heads ready")
    assert summary.prepared and all("zeroshot" in p for p in summary.prepared.values())
