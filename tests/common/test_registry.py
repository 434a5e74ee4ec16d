"""The name -> class registry: built-in registration, messages, and real entry-point plugins."""

from __future__ import annotations

import importlib
import uuid

import pytest

from compbench.common.errors import UsageError
from compbench.common.registry import Registry, closest_name, unknown_name_message

GROUP = "compbench.test-widgets"   # a group no installed package declares


def fresh(group: str = GROUP) -> Registry:
    return Registry("widget", group)


def widget(name: str) -> type:
    return type(f"Widget_{name}", (), {"name": name})


# ---------------------------------------------------------------- built-in registration


def test_register_get_names():
    registry = fresh()
    alpha, beta = widget("alpha"), widget("beta")
    assert registry.register(beta) is beta          # usable as a class decorator
    registry.register(alpha)
    assert registry.names() == ["alpha", "beta"]
    assert registry.get("alpha") is alpha
    assert "beta" in registry and "gamma" not in registry
    assert registry.origin("alpha") == "built-in"
    assert registry.plugin_errors == {}


def test_registering_the_same_class_twice_is_harmless():
    registry, alpha = fresh(), widget("alpha")
    registry.register(alpha)
    registry.register(alpha)
    assert registry.names() == ["alpha"]


def test_duplicate_name_is_rejected():
    registry = fresh()
    registry.register(widget("alpha"))
    with pytest.raises(ValueError, match="widget name 'alpha' is taken by"):
        registry.register(widget("alpha"))


@pytest.mark.parametrize("name", [None, "", 3])
def test_class_needs_a_name(name):
    with pytest.raises(TypeError, match="non-empty class attribute 'name'"):
        fresh().register(type("Nameless", (), {} if name is None else {"name": name}))


def test_unknown_name_is_a_usage_error_with_did_you_mean():
    registry = fresh()
    for name in ("torch", "onnxruntime"):
        registry.register(widget(name))
    with pytest.raises(UsageError) as info:
        registry.get("trch")
    assert str(info.value) == "unknown widget 'trch'; valid: onnxruntime, torch (did you mean 'torch'?)"


def test_unknown_name_in_an_empty_registry_says_where_names_come_from():
    message = fresh().unknown_name_message("svd")
    assert message.startswith("unknown widget 'svd'; there are no widgets yet")
    assert GROUP in message and "\n" not in message


def test_unknown_name_message_without_a_close_match():
    assert unknown_name_message("task", "zzz", ["cola", "sst2"]) == "unknown task 'zzz'; valid: cola, sst2"
    assert closest_name("SST", ["cola", "sst2"]) == "sst2"
    assert closest_name("zzz", ["cola", "sst2"]) is None


# ---------------------------------------------------------------- entry-point plugins

PLUGIN_MODULE = """
from compbench.backends import Availability, Backend


class FakeBackend(Backend):
    name = "fake"

    def availability(self, options):
        return Availability(True)

    def load(self, artifact, options):
        raise NotImplementedError


class Clash:
    name = "fake"       # the same name as FakeBackend: the second one must be rejected, not crash
"""


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution ``myplugin 0.1`` (a .dist-info folder on sys.path) with a plugin module.

    Returns a function that writes its entry_points.txt; module names are unique per test, so
    nothing is left over in sys.modules for another test.
    """
    module = f"myplugin_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_MODULE)
    (tmp_path / f"{module}_broken.py").write_text("raise ImportError(\"needs libfoo,\\nwhich is not installed\")\n")
    info = tmp_path / "myplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def declare(entry_points: str) -> str:
        (info / "entry_points.txt").write_text(entry_points.format(module=module))
        importlib.invalidate_caches()
        return module

    return declare


def test_plugin_is_found_through_its_entry_point(plugin_dist):
    module = plugin_dist("[compbench.test-backends]\nfake = {module}:FakeBackend\n")
    registry = Registry("backend", "compbench.test-backends")
    assert "fake" in registry
    cls = registry.get("fake")
    assert cls.__module__ == module and cls.__name__ == "FakeBackend"
    assert registry.origin("fake").startswith(f"plugin {module}:FakeBackend")
    assert "myplugin 0.1" in registry.origin("fake")
    assert registry.plugin_errors == {}


def test_plugin_in_the_real_groups(plugin_dist):
    """The groups compbench reads, with fresh registries so the shared ones stay untouched."""
    module = plugin_dist("[compbench.backends]\nfake = {module}:FakeBackend\n\n"
                         "[compbench.compressors]\nfakec = {module}:Clash\n")
    backends, compressors = Registry("backend", "compbench.backends"), Registry("compressor", "compbench.compressors")
    assert backends.get("fake").__module__ == module
    assert backends.origin("fake").startswith("plugin ")
    assert compressors.names() == ["fake"]       # registered under the class's name, not the entry point's


def test_broken_plugins_are_recorded_not_raised(plugin_dist):
    plugin_dist(
        "[compbench.test-backends]\n"
        "fake = {module}:FakeBackend\n"
        "broken = {module}_broken:Thing\n"
        "missing = {module}:NoSuchClass\n"
        "clash = {module}:Clash\n"
    )
    registry = Registry("backend", "compbench.test-backends")
    assert registry.names() == ["fake"]          # the good plugin still loads
    errors = registry.plugin_errors
    assert set(errors) == {"broken", "missing", "clash"}
    assert errors["broken"] == "ImportError: needs libfoo, which is not installed"
    assert errors["missing"].startswith("AttributeError")
    assert errors["clash"].startswith("ValueError: backend name 'fake' is taken")
    with pytest.raises(UsageError) as info:
        registry.get("broken")
    assert "plugin 'broken' failed to load: ImportError: needs libfoo" in str(info.value)
    assert "\n" not in str(info.value)


def test_builtin_wins_over_a_plugin_with_its_name(plugin_dist):
    plugin_dist("[compbench.test-backends]\nfake = {module}:FakeBackend\n")
    registry = Registry("backend", "compbench.test-backends")
    builtin = registry.register(widget("fake"))  # before first use: plugins load lazily, after built-ins
    assert registry.get("fake") is builtin
    assert registry.origin("fake") == "built-in"
    assert registry.plugin_errors["fake"].startswith("ValueError: backend name 'fake' is taken")


def test_list_shows_plugin_errors_and_survives_a_broken_backend(monkeypatch):
    from click.testing import CliRunner

    from compbench.cli import main
    from compbench.common.plugins import BACKENDS

    class Exploding:
        name = "exploding"

        def availability(self, options):
            raise RuntimeError("boom")

    BACKENDS.names()                                 # load real plugins first, so setitem below sticks
    monkeypatch.setitem(BACKENDS._classes, "exploding", Exploding)
    monkeypatch.setitem(BACKENDS._origins, "exploding", "test")
    monkeypatch.setitem(BACKENDS.plugin_errors, "brokenplugin", "ImportError: no libfoo")
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    assert "exploding      cpu   broken: RuntimeError: boom" in result.stdout
    assert "plugin 'brokenplugin' failed to load: ImportError: no libfoo" in result.stdout
    assert "torch" in result.stdout
