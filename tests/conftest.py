"""Shared pytest configuration: the test world's fixture modules, loaded as plugins, and one
Hypothesis profile that keeps property tests deterministic on a loaded 2-core machine."""

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.world.nats",
    "tests.world.registries",
    "tests.world.images",
    "tests.world.kube",
    "tests.world.artifacts",
    "tests.world.faults",
]

# derandomize: the same examples every run (a CI failure reproduces); no deadline and no
# too_slow health check, since a shared machine's timing says nothing about the code.
settings.register_profile(
    "clusterregistry",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("clusterregistry")
