"""The NATS adapter: connections, streams, key-value buckets, publishing.

`Bus` (connecting) is the facade the services hold: its nats-py client and
JetStream context are private to this package, and what a service needs is a
method or an adapter function here. Every nats-py call runs inside
`translating.translating`, the one translation of nats-py's errors into
clusterregistry.errors, so services decide nak vs term (retry vs give up)
from the error tree alone, and a bug is never mistaken for a NATS failure.
"""
