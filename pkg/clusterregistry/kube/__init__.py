"""The Kubernetes adapter: clients, typed views of API objects, list/watch, leases.

kubernetes-asyncio errors are translated here into clusterregistry.errors.
"""
