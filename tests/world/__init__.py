"""The test world: pytest fixtures over the real processes of `clusterregistry_sandbox`.

Each module here is a pytest plugin listed in tests/conftest.py. Fixtures
start real programs (nats-server, docker-registry, skopeo) with state under
the test's tmp_path, and stop them at teardown whatever the outcome.
"""
