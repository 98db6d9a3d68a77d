"""The syscall policy of a container that mounts host folders (Incus `raw.seccomp`).

Pure: `policy()` is the text Incus hands to LXC. `raw.seccomp` replaces the policy Incus
would generate ("Full policy override" in Incus's internal/server/seccomp), so the policy
restates Incus's default deny list, then refuses what would leave a set-uid or set-gid
file on a host folder. Seccomp sees only syscall arguments, never the file system, so the
rules hold in the whole container: Docker layers and Debian packages with set-id files
fail to unpack inside a session (measured; README "Workspace ownership and set-id files").
"""

from __future__ import annotations

# EPERM, not a silently dropped bit: a filter can only fail a call or skip it whole, and a
# skipped `chmod 4755` would leave every other bit unchanged too (a file left unreadable or
# not executable with no error). EPERM is what chmod says to an owner it refuses anyway.
EPERM, ENOSYS = 1, 38
SETID_BITS = (0o4000, 0o2000)  # S_ISUID, S_ISGID: one rule each (a masked compare tests one value)

# Incus's own default deny list (security.syscalls.deny_default), kept because raw.seccomp
# replaces it; reject_force_umount is LXC's shorthand for umount2 with MNT_FORCE.
INCUS_DEFAULTS = ("kexec_load", "open_by_handle_at", "init_module", "finit_module", "delete_module")

# Each syscall that sets a file mode, with the index of its mode argument.
MODE_ARGUMENTS = (
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("creat", 1),
    ("open", 2),  # the mode is applied with O_CREAT or O_TMPFILE; glibc passes 0 otherwise
    ("openat", 3),
    ("mknod", 1),  # S_IFREG | 04755 makes a set-uid regular file
    ("mknodat", 2),
)

# Syscalls whose mode seccomp cannot see (openat2 takes it in a struct, io_uring opens
# files from a ring): "not implemented" makes glibc, runc and libuv fall back to openat.
UNINSPECTABLE = ("openat2", "io_uring_setup")


def rules() -> list[str]:
    """The rule lines: each refuses one syscall when one set-id bit is in its mode."""
    lines = [f"{name} errno {ENOSYS}" for name in (*INCUS_DEFAULTS, *UNINSPECTABLE)]
    for name, index in MODE_ARGUMENTS:
        for bit in SETID_BITS:
            lines.append(f"{name} errno {EPERM} [{index},{bit},SCMP_CMP_MASKED_EQ,{bit}]")
    return lines


def policy() -> str:
    """The full LXC seccomp policy (version 2, deny list) for raw.seccomp."""
    return "\n".join(["2", "denylist", "[all]", "reject_force_umount", *rules()]) + "\n"
