"""The tracker's settings: the shared consumer's unacknowledged maximum is checked at load."""

from __future__ import annotations

import pytest

from clusterregistry import config
from clusterregistry.errors import ConfigError


def test_max_ack_pending_below_the_batch_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"tracker\.maxAckPending"):
        config.load(env={"CLUSTERREGISTRY_TRACKER_BATCHSIZE": "64",
                         "CLUSTERREGISTRY_TRACKER_MAXACKPENDING": "32"})
    settings = config.load(env={"CLUSTERREGISTRY_TRACKER_MAXACKPENDING": "4096"})
    assert settings.tracker.max_ack_pending == 4096

