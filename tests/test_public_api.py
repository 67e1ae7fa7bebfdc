"""The public names: every module's ``__all__`` resolves, and ``auto_renditions.api`` gathers them."""

from __future__ import annotations

from types import ModuleType

import pytest
from django.dispatch import Signal

from auto_renditions import api, conf, signals


@pytest.mark.parametrize("module", [api, conf, signals], ids=lambda m: m.__name__)
def test_every_public_name_resolves(module: ModuleType) -> None:
    assert module.__all__, f"{module.__name__} declares no public names"
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)  # what a site's star import sees
    assert set(module.__all__) <= set(namespace)


def test_the_api_module_offers_every_signal_and_setting() -> None:
    assert set(signals.__all__) | set(conf.__all__) <= set(api.__all__)
    for name in signals.__all__:
        assert isinstance(getattr(api, name), Signal)
        assert getattr(api, name) is getattr(signals, name)
