"""The --vm runner's pure parts."""

from __future__ import annotations

from tests import vm


def test_missing_names_each_device() -> None:
    assert vm.missing({"/dev/kvm": False, "/dev/vhost-vsock": True}) == [
        "KVM (hardware virtualisation)"
    ]
    assert vm.missing({"/dev/kvm": True, "/dev/vhost-vsock": True}) == []


def test_vm_config_is_a_nested_capable_vm() -> None:
    argv = vm.vm_config("n1", cpus=2, memory="4GiB")
    assert argv[:5] == ["incus", "launch", "images:debian/12", "n1", "--vm"]
    assert "security.nesting=true" in argv
    assert "limits.memory=4GiB" in argv
