#!/bin/bash
# The coi image, step 4: a container boots only what a session uses. A session's first
# command waits until early boot is over (sysinit.target), so every unit on that path, or
# competing for the CPU while it runs, is time before the tool's prompt.
set -euo pipefail

# Jobs of a long-lived machine: scrubbing, trimming, package timers, crash dumps. A
# session container lives minutes to days and is rebuilt from the image, never upgraded.
for unit in e2scrub_reap.service e2scrub_all.timer systemd-pstore.service fstrim.timer \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
# An unprivileged container cannot load kernel modules: every modprobe@ unit fails anyway.
ln -sf /dev/null /etc/systemd/system/modprobe@.service
# The journal in memory: no flush to disk on the way to sysinit.target (measured: the
# longest step of the critical chain after journald's own start).
install -d /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' > /etc/systemd/journald.conf.d/coi.conf
# Early boot's own steps that have nothing to do in a container (measured: sysinit.target
# at 100-145 ms instead of 230-280, the whole boot 230 ms instead of 330-390): no fstab to
# remount, system users made when the image was built, /dev populated by liblxc, no utmp
# reader, a volatile journal with nothing to flush, no console login (sessions exec).
for unit in systemd-remount-fs.service systemd-sysusers.service \
    systemd-tmpfiles-setup-dev.service systemd-update-utmp.service \
    systemd-update-utmp-runlevel.service systemd-journal-flush.service \
    console-getty.service getty@tty1.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
# Generators run before any unit: those for disks, encryption, hibernation, consoles, the
# kernel command line and SysV scripts (every service here has a unit of its own) find
# nothing to do in a container. The fstab generator stays.
install -d /etc/systemd/system-generators
for gen in cryptsetup debug getty gpt-auto hibernate-resume integritysetup rc-local \
    system-update sysv veritysetup; do
    ln -sf /dev/null "/etc/systemd/system-generators/systemd-$gen-generator"
done
