"""Source globs, the CEL paths the cache keys on, self-made TLS material, and the settings."""

from __future__ import annotations

import base64
import datetime
import ssl
from pathlib import Path

import celpy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from clusterregistry import config, references
from clusterregistry.config import DEFAULT_MATCH_CONDITION
from clusterregistry.errors import ConfigError
from clusterregistry.sources import SourceRules
from clusterregistry.webhook.certificates import merged_bundle, self_signed, service_hosts
from clusterregistry.webhook.policies import MatchCondition, observed_paths
from clusterregistry.webhook.registrations import mutating_webhook_configuration


def paths(expression: str) -> tuple[tuple[str, ...], ...] | None:
    return observed_paths(celpy.Environment().compile(expression))


def test_the_default_expression_reads_namespace_two_labels_and_presences_only() -> None:
    assert paths(DEFAULT_MATCH_CONDITION) == (
        ("?", "object", "metadata", "labels"), ("?", "object", "metadata", "labels", "app"),
        ("?", "object", "metadata", "labels", "name"),
        ("object", "metadata", "labels", "app"), ("object", "metadata", "labels", "name"),
        ("object", "metadata", "namespace"))


def test_other_labels_do_not_split_the_cache_but_change_nothing_either() -> None:
    condition = MatchCondition(DEFAULT_MATCH_CONDITION)
    for i in range(50):
        obj = {"metadata": {"namespace": "kube-system",
                            "labels": {"app": "commissioning", "pod-name": f"p-{i}"}}}
        assert condition.evaluate(obj=obj, old_obj=None, request={}) is True
        obj["metadata"]["labels"]["app"] = "other"
        assert condition.evaluate(obj=obj, old_obj=None, request={}) is False
    assert len(condition._cache) == 2
    # presence keys never conflate inputs with different answers: every answer from a
    # shared (caching) condition equals a fresh evaluation's
    shared = MatchCondition("has(object.metadata.labels.app)")
    for metadata in ({}, {"labels": {}}, {"labels": {"app": "x"}}, {"labels": "str"},
                     {"labels": {"app": None}}, {"labels": {"other": 1}}, {"labels": []}):
        obj = {"metadata": metadata}
        fresh = MatchCondition("has(object.metadata.labels.app)")
        assert shared.evaluate(obj=obj, old_obj=None, request={}) == fresh.evaluate(
            obj=obj, old_obj=None, request={}), metadata


def test_macro_variables_and_index_access_resolve_to_their_receivers() -> None:
    assert paths('object.spec.containers.all(c, c.image.startsWith("a"))') == (
        ("object", "spec", "containers"),)
    assert paths('object.metadata.labels["x"] == "y"') == (("object", "metadata", "labels"),)
    assert paths("size(object) > 0") == (("object",),)
    assert paths('request.operation == "CREATE"') == (("request", "operation"),)


def test_cache_keys_tell_missing_from_null_and_values_apart() -> None:
    condition = MatchCondition("has(object.metadata.labels) && "
                               'object.metadata.labels.app == "x"')
    request = {"operation": "CREATE"}
    assert condition.evaluate(obj={"metadata": {"labels": {"app": "x"}}}, old_obj=None,
                              request=request) is True
    assert condition.evaluate(obj={"metadata": {"labels": {"app": "y"}}}, old_obj=None,
                              request=request) is False
    assert condition.evaluate(obj={"metadata": {}}, old_obj=None, request=request) is False
    error = condition.evaluate(obj={"metadata": {"labels": {}}}, old_obj=None, request=request)
    assert isinstance(error, str) and "resulted in error" in error
    # the same answers again, from the cache
    assert condition.evaluate(obj={"metadata": {"labels": {"app": "x"}}}, old_obj=None,
                              request=request) is True
    assert condition.evaluate(obj={"metadata": {"labels": {"app": "y"}}}, old_obj=None,
                              request=request) is False


def test_a_non_boolean_expression_is_an_error() -> None:
    result = MatchCondition("object.metadata.name").evaluate(
        obj={"metadata": {"name": "x"}}, old_obj=None, request={})
    assert isinstance(result, str) and "expected a bool" in result


def test_an_expression_that_does_not_parse_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="matchConditionExpression: not a CEL expression"):
        MatchCondition("object.metadata.(")


@pytest.mark.parametrize(("kw", "image", "reason"), [
    ({}, "edge:5000/x:1", "already-local"),
    ({}, "EDGE:5000/x:1", "already-local"),
    ({"deny_hosts": ["*.azurecr.io"]}, "my.azurecr.io/a:1", "denied-host"),
    ({"deny_hosts": ["*.azurecr.io"]}, "MY.AzureCR.io/a:1", "denied-host"),
    ({"allow_hosts": ["localhost:*"]}, "localhost:5000/a", None),
    ({"allow_hosts": ["localhost:*"]}, "localhost/a", "not-allowed-host"),
    ({"deny_repositories": ["docker.io/library/*"]}, "nginx", "denied-repository"),
    ({"deny_repositories": ["docker.io/library/*"]}, "bitnami/nginx", None),
    ({"allow_repositories": ["acr.io/nf/*"]}, "acr.io/nf/upf", None),
    ({"allow_repositories": ["acr.io/nf/*"]}, "acr.io/other/upf", "not-allowed-repository"),
])
def test_source_rules(kw: dict[str, list[str]], image: str, reason: str | None) -> None:
    assert SourceRules("edge:5000", **kw).skip_reason(references.parse(image)) == reason


def test_self_signed_material_verifies_for_the_service_names(tmp_path: Path) -> None:
    hosts = service_hosts("clusterregistry-webhook", "clusterregistry", ["127.0.0.1"])
    material = self_signed(hosts)
    cert = x509.load_pem_x509_certificate(material.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "clusterregistry-webhook.clusterregistry.svc" in names.get_values_for_type(
        x509.DNSName)
    ca = x509.load_pem_x509_certificate(material.ca_pem)
    cert.verify_directly_issued_by(ca)
    # and a TLS stack accepts the pair (load_cert_chain checks the key matches)
    (tmp_path / "tls.crt").write_bytes(material.cert_pem)
    (tmp_path / "tls.key").write_bytes(material.key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "tls.crt", tmp_path / "tls.key")
    with pytest.raises(ssl.SSLError):
        (tmp_path / "other.key").write_bytes(self_signed(["x"]).key_pem)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            tmp_path / "tls.crt", tmp_path / "other.key")


def test_merged_bundle_keeps_other_replicas_cas_and_drops_expired_and_excess() -> None:
    cas = [self_signed(["a"]).ca_pem for _ in range(10)]
    bundle = None
    for ca in cas:
        bundle = merged_bundle(bundle, ca)
    assert bundle is not None
    kept = x509.load_pem_x509_certificates(base64.b64decode(bundle))
    assert len(kept) == 8
    assert kept[-1].public_bytes(serialization.Encoding.PEM) == cas[-1]
    # re-adding our own CA does not duplicate it
    again = x509.load_pem_x509_certificates(base64.b64decode(merged_bundle(bundle, cas[-1])))
    assert len(again) == 8
    # garbage in the bundle is dropped, not kept
    assert len(x509.load_pem_x509_certificates(base64.b64decode(
        merged_bundle(base64.b64encode(b"junk").decode(), cas[0])))) == 1
    assert datetime.datetime.now(datetime.UTC) < kept[0].not_valid_after_utc


@pytest.mark.parametrize(("env", "message"), [
    ({"CLUSTERREGISTRY_WEBHOOK_POLICY": "Sometimes"}, "webhook.policy"),
    ({"CLUSTERREGISTRY_WEBHOOK_UNAVAILABLEFALLBACK": "Maybe"}, "webhook.unavailableFallback"),
    ({"CLUSTERREGISTRY_WEBHOOK_PORT": "70000"}, "webhook.port"),
    ({"CLUSTERREGISTRY_WEBHOOK_MAXBODYBYTES": "10"}, "webhook.maxBodyBytes"),
    ({"CLUSTERREGISTRY_WEBHOOK_TLSCERTFILE": ""}, "webhook.tlsCertFile"),
    ({"CLUSTERREGISTRY_WEBHOOK_DENYHOSTS": "a, ,"}, None),
])
def test_webhook_settings_are_validated_by_key(env: dict[str, str], message: str | None) -> None:
    if message is None:
        assert config.load(env=env).webhook.deny_hosts == ["a"]
        return
    with pytest.raises(ConfigError, match=message):
        config.load(env=env)


def test_the_rendered_configuration_carries_the_exclusions() -> None:
    settings = config.load(env={})
    rendered = mutating_webhook_configuration(settings)
    (hook,) = rendered["webhooks"]
    assert hook["matchConditions"][0]["expression"] == DEFAULT_MATCH_CONDITION
    assert hook["clientConfig"]["service"] == {
        "namespace": "clusterregistry", "name": "clusterregistry-webhook", "path": "/mutate",
        "port": 443}
    assert hook["sideEffects"] == "None" and hook["reinvocationPolicy"] == "IfNeeded"
    assert {r["resources"][0] for r in hook["rules"]} == {"pods", "pods/ephemeralcontainers"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["clusterregistry"]
    assert "matchConditions" not in mutating_webhook_configuration(
        settings, match_conditions=False)["webhooks"][0]


_SHARED = MatchCondition(DEFAULT_MATCH_CONDITION)


@given(namespace=st.sampled_from(["kube-system", "nf", "default"]),
       labels=st.none() | st.dictionaries(
           st.sampled_from(["app", "name", "tier", "pod-name"]),
           st.sampled_from(["commissioning", "descheduler", "cert-exporter", "coredns", ""]),
           max_size=3),
       drop_namespace=st.booleans())
def test_cached_answers_equal_fresh_evaluations(namespace: str, labels: dict[str, str] | None,
                                                drop_namespace: bool) -> None:
    metadata: dict[str, object] = {"namespace": namespace}
    if drop_namespace:
        del metadata["namespace"]
    if labels is not None:
        metadata["labels"] = labels
    obj = {"metadata": metadata}
    fresh = MatchCondition(DEFAULT_MATCH_CONDITION)
    expected = fresh.evaluate(obj=obj, old_obj=None, request={})
    assert _SHARED.evaluate(obj=obj, old_obj=None, request={}) == expected
