"""The tracker: which images each pod owner uses, from the relay's stream into KV."""
