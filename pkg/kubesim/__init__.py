"""kubesim: a Kubernetes API server simulator for the sandbox and the tests.

No real kube-apiserver can run on the machines this project is built on, so
kubesim stands in for it. It follows the Kubernetes API conventions (object
metadata, resourceVersion, watch with bookmarks and 410 Gone, Status errors,
the three patch types, admission webhooks, owner references and cascading
deletion) closely enough that code proven against it works unchanged against
a real cluster. It never imports clusterregistry.
"""

__all__: list[str] = []
