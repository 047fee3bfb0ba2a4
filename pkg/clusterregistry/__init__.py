"""clusterregistry: an event-driven edge registry for Kubernetes."""

__version__ = "0.1.0"
