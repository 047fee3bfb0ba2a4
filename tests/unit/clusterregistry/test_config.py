"""Settings: AOSM keys, YAML then environment, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterregistry import config
from clusterregistry.errors import ConfigError


def test_defaults_are_aosm_defaults() -> None:
    settings = config.load(env={})
    registry = settings.cluster_registry
    assert registry.storage_class_name == "nexus-shared"
    assert registry.storage_size == "100Gi"
    assert settings.storage_bytes == 100 * 2**30
    assert registry.cluster_registry_gc_cadence == "0 0 * * *"
    assert registry.cluster_registry_gc_threshold == 0
    assert settings.gc_enabled
    assert not settings.enable_cluster_registry
    assert "kube-system" in settings.webhook.pod.mutation.match_condition_expression


def test_yaml_with_the_aosm_prefix(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(
        "global:\n"
        "  networkfunctionextension:\n"
        "    enableClusterRegistry: true\n"
        "    enableEarlyLoading: true\n"
        "    clusterRegistry:\n"
        "      storageSize: 1Ti\n"
        "      clusterRegistryGCCadence: ''\n"
        "      clusterRegistryGCThreshold: 80\n"
        "      highAvailability: {enabled: false}\n"
    )
    settings = config.load(path, env={})
    assert settings.enable_early_loading
    assert settings.storage_bytes == 2**40
    assert not settings.gc_enabled
    assert settings.cluster_registry.cluster_registry_gc_threshold == 80
    assert not settings.cluster_registry.high_availability.enabled


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("clusterRegistry:\n  clusterRegistryGCCadence: '0 1 * * *'\n")
    env = {
        "CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCCADENCE": "*/5 * * * *",
        "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
        "CLUSTERREGISTRY_NATS_SERVERS": "nats://a:4222, nats://b:4222",
        "CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCTHRESHOLD": "42.5",
    }
    settings = config.load(path, env=env)
    assert settings.cluster_registry.cluster_registry_gc_cadence == "*/5 * * * *"
    assert settings.enable_cluster_registry
    assert settings.nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.cluster_registry.cluster_registry_gc_threshold == 42.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCCADENCE": "every day"},
         "clusterRegistryGCCadence"),
        ({"CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCTHRESHOLD": "120"},
         "clusterRegistryGCThreshold"),
        ({"CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCTHRESHOLD": "lots"},
         "CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCTHRESHOLD"),
        ({"CLUSTERREGISTRY_CLUSTERREGISTRY_STORAGESIZE": "100 gigs"}, "storageSize"),
        ({"CLUSTERREGISTRY_ENABLEEARLYLOADING": "true"}, "enableEarlyLoading"),
        ({"CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "maybe"}, "ENABLECLUSTERREGISTRY"),
        ({"CLUSTERREGISTRY_CLUSTERREGISTRY_REGISTRYSERVICE_SCALE": "huge"},
         r"^clusterRegistry\.registryService\.scale: 'huge' is not one of small, medium, "
         "large$"),
        ({"CLUSTERREGISTRY_NATS_STREAMREPLICAS": "2"},
         r"^nats\.streamReplicas: '2' is not one of 1, 3, 5$"),
        ({"CLUSTERREGISTRY_RELAY_BATCHSIZE": "-"}, "CLUSTERREGISTRY_RELAY_BATCHSIZE"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(env=env)


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("clusterRegistry:\n  storageSise: 10Gi\n")
    with pytest.raises(ConfigError, match="storageSise"):
        config.load(path, env={})


@pytest.mark.parametrize(("text", "expected"), [
    ("100Gi", 100 * 2**30), ("1.5Ti", int(1.5 * 2**40)), ("500M", 500 * 10**6), ("42", 42),
])
def test_quantities(text: str, expected: int) -> None:
    assert config.parse_quantity(text) == expected


def test_choices_are_typed_and_validated_by_the_schema(tmp_path: Path) -> None:
    """Enum-like keys are Literal types msgspec checks; their errors name key, value, choices."""
    path = tmp_path / "s.yaml"
    path.write_text("webhook:\n  policy: IfAvailable\ngc:\n  sweepMode: sometimes\n")
    with pytest.raises(ConfigError, match=r"^gc\.sweepMode: 'sometimes' is not one of "
                                          "subprocess, job, none$"):
        config.load(path, env={})
    path.write_text("webhook:\n  policy: IfAvailable\nnats:\n  streamReplicas: 3\n")
    settings = config.load(path, env={"CLUSTERREGISTRY_NATS_STREAMREPLICAS": "5"})
    assert (settings.webhook.policy, settings.nats.stream_replicas) == ("IfAvailable", 5)
    path.write_text("mirror:\n  registries:\n  - host: 3\n")
    with pytest.raises(ConfigError, match=r"^mirror\.registries\[0\]\.host: Expected `str`"):
        config.load(path, env={})
