"""The NATS adapter: connections, streams, key-value buckets, publishing.

nats-py errors are translated here into clusterregistry.errors, so services
decide nak vs term (retry vs give up) from the error tree alone.
"""
