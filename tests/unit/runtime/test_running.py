"""The runner's command line and identity: one shape for every service, help for what it uses."""

from __future__ import annotations

import importlib
import os
import socket

import pytest

from clusterregistry.runtime import running

SERVICES = ["webhook", "relay", "tracker", "reconciler", "mirror", "gc"]


def service(name: str) -> running.Service:
    return importlib.import_module(f"clusterregistry.{name}.serving").SERVICE  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", SERVICES)
def test_help_lists_the_flags_a_service_uses_and_every_flag_is_accepted(name: str) -> None:
    declared = service(name)
    assert declared.name == name
    help_text = running.parser(declared).format_help()
    assert "--config" in help_text
    assert ("--kubeconfig" in help_text) == (declared.kubeconfig_help is not None)
    assert ("--identity" in help_text) == (declared.identity_help is not None)
    # the sandbox passes all three to every process
    args = running.parser(declared).parse_args(
        ["--config", "s.yaml", "--kubeconfig", "k", "--identity", "i"])
    assert (args.config, args.kubeconfig, args.identity) == ("s.yaml", "k", "i")


def test_what_each_service_declares() -> None:
    uses_kube = {n for n in SERVICES if service(n).kubeconfig_help is not None}
    named = {n for n in SERVICES if service(n).identity_help is not None}
    assert uses_kube == {"webhook", "relay", "reconciler", "mirror", "gc"}
    assert named == {"relay", "tracker", "reconciler", "mirror", "gc"}
    assert [n for n in SERVICES if service(n).disabled is not None] == ["webhook"]


def test_identity_is_the_pod_name_else_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "relay-7d9f-abcde")
    assert running.identity() == "relay-7d9f-abcde"
    monkeypatch.delenv("POD_NAME")
    assert running.identity() == f"{socket.gethostname()}-{os.getpid()}"
