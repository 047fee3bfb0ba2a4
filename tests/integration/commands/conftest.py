"""Fixtures the command tests share with the services they drive."""

from tests.integration.gc.conftest import gc_world

__all__ = ["gc_world"]
