"""kustomize_lite renders like kustomize: compared with the real one where it
is installed, and on a value kustomize v5.5.0 printed, where it is not."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from variants import K8S, VARIANTS, rendered
from kustomize_lite import Unsupported, render


def real_kustomize(directory):
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(directory)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_id(docs):
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_renderer_agrees_with_kustomize(variant):
    mine, theirs = by_id(rendered(variant)), by_id(real_kustomize(K8S / variant))
    assert sorted(mine) == sorted(theirs)
    for key in mine:
        assert mine[key] == theirs[key], key


def test_generated_names_carry_kustomizes_hash(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "configMapGenerator:\n  - name: g\n    literals: [a=b]\n"
        "secretGenerator:\n  - name: s\n    literals: [a=b]\n"
    )
    names = sorted(d["metadata"]["name"] for d in render(tmp_path))
    # As printed by kustomize v5.5.0 (kubectl 1.32) for the same kustomization.
    assert names == ["g-4h2mbtbbt6", "s-k695gkmbtk"]


def test_an_unsupported_field_is_refused(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\n")
    with pytest.raises(Unsupported):
        render(tmp_path)


def test_a_file_outside_the_root_is_refused(tmp_path):
    (tmp_path / "outside.txt").write_text("x")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "kustomization.yaml").write_text(
        "configMapGenerator:\n  - name: g\n    files: [../outside.txt]\n"
    )
    with pytest.raises(Unsupported):
        render(tmp_path / "k")
