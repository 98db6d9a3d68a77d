"""The agent's side of the workspace races (tests/integration/test_security_workspace.py
and its non-root twins): a Perl inotify racer (every Debian image has Perl) run by a
`coi run` in the background, waiting for coi's first unlink in a folder and answering it
within microseconds: a link to the victim where a file was, or the folder swapped for a
link to the victim's folder."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator

import pytest

RACER = r"""
use strict;
my ($dir, $mode, $victim, $count) = @ARGV;
my %nr = (x86_64 => [294, 254], aarch64 => [26, 27]);
my $arch = `uname -m`; chomp $arch;
my ($init, $add) = @{$nr{$arch}};
my $fd = syscall($init, 0);
die "inotify_init1: $!" if $fd < 0;
die "inotify_add_watch: $!" if syscall($add, $fd, $dir, 0x200) < 0;  # IN_DELETE
open(my $fh, "<&=", $fd) or die "fdopen: $!";
$SIG{ALRM} = sub { print "timeout\n"; exit 0 };
alarm 150;
$| = 1;
print "ready\n";
my $done = 0;
while ($done < $count) {
    my $n = sysread($fh, my $buf, 65536);
    last unless $n;
    my $off = 0;
    while ($off < $n) {
        my ($wd, $mask, $cookie, $len) = unpack("iIII", substr($buf, $off, 16));
        my $name = unpack("Z*", substr($buf, $off + 16, $len));
        $off += 16 + $len;
        if ($mode eq "link-files") {
            symlink($victim, "$dir/$name");  # too late, once coi has put the file back
            $done++;
        } elsif ($done == 0) {
            rename($dir, "$dir.moved");
            symlink($victim, $dir);
            $done = $count;
        }
    }
}
print "done $done\n";
"""


class Racer:
    """A background `coi run` (any Popen with a stdout pipe) whose container runs RACER."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out = b""

    def ready(self, timeout: float = 180) -> bool:
        """Wait (bounded) until the racer watches."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"ready\n" not in self.out and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.out += self.proc.stdout.read()
                break
            got, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if got:
                self.out += os.read(self.proc.stdout.fileno(), 4096)
        return b"ready\n" in self.out

    def end(self) -> str:
        """Its whole output once it has ended."""
        out, err = self.proc.communicate(timeout=240)
        return (self.out + out).decode() + err.decode()


@pytest.fixture
def racers() -> Iterator[list[Racer]]:
    """Racers a test started; any still running is killed at its end."""
    found: list[Racer] = []
    yield found
    for racer in found:
        if racer.proc.poll() is None:
            racer.proc.kill()
            racer.proc.wait(timeout=60)
