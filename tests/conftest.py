"""Shared pytest configuration: the test world's fixture modules, loaded as plugins."""

pytest_plugins = [
    "tests.world.nats",
    "tests.world.registries",
    "tests.world.images",
    "tests.world.kube",
]
