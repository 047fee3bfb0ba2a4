"""The MutatingWebhookConfiguration that tells the API server which CA to trust for the
webhook: read every webhook's caBundle and write the new ones in one guarded patch.

Several webhook replicas, each with a CA of its own when no cert-manager
provides one, write into the same object. The JSON patch starts with a `test`
of the resourceVersion read, so a replica never overwrites a CA another one
added in between: that patch fails (422), and the caller reads again.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes_asyncio import client

from clusterregistry.errors import PermanentError, RetryableError
from clusterregistry.kube.clients import TRANSPORT_ERRORS, status_of


async def patch_ca_bundles(api: client.ApiClient, configuration: str,
                           bundle_for: Callable[[str | None], str]) -> int:
    """Set each webhook's caBundle of `configuration` to `bundle_for(its current one)`.

    Returns the number of webhooks patched. RetryableError when the object does not
    exist yet, the patch lost a race, or the API server did not answer: the caller
    tries again. PermanentError when this process may not patch it, or it has no
    webhooks.
    """
    admission = client.AdmissionregistrationV1Api(api)
    try:
        current = await admission.read_mutating_webhook_configuration(configuration)
        webhooks = current.webhooks or []
        if not webhooks:
            raise PermanentError(f"MutatingWebhookConfiguration {configuration} has no webhooks")
        operations: list[dict[str, object]] = [
            {"op": "test", "path": "/metadata/resourceVersion",
             "value": current.metadata.resource_version}]
        for index, webhook in enumerate(webhooks):
            existing = webhook.client_config.ca_bundle if webhook.client_config else None
            bundle = bundle_for(existing)
            if webhook.client_config is None:
                operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig",
                                   "value": {"caBundle": bundle}})
            else:
                operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                                   "value": bundle})
        await admission.patch_mutating_webhook_configuration(configuration, operations)
    except TRANSPORT_ERRORS as exc:
        status = status_of(exc)
        if status == 404:
            raise RetryableError(
                f"MutatingWebhookConfiguration {configuration} does not exist (yet)") from exc
        if status in (401, 403):
            raise PermanentError(
                f"not allowed to patch MutatingWebhookConfiguration {configuration}: "
                f"HTTP {status}") from exc
        # 422 is a lost race (the resourceVersion test failed): read again and retry
        raise RetryableError(f"patching the caBundle of {configuration}: "
                             f"{f'HTTP {status}' if status else exc}") from exc
    return len(webhooks)
