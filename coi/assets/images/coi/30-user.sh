#!/bin/bash
# The coi image, step 3: the user `code` (COI_UID, 1000) with passwordless sudo and
# Docker, the /workspace mount point, and shutdown/poweroff that end a session now.
set -euo pipefail

user=${COI_USER:-code}
uid=${COI_UID:-1000}
getent group "$uid" >/dev/null || groupadd --gid "$uid" "$user"
id -u "$user" >/dev/null 2>&1 ||
    useradd --uid "$uid" --gid "$uid" --create-home --home-dir "/home/$user" --shell /bin/bash "$user"
# Docker without sudo. Group membership applies to login sessions (su, runuser, sudo -u);
# `incus exec --user` sets no supplementary groups.
if getent group docker >/dev/null; then usermod -aG docker "$user"; fi

echo "$user ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/coi-$user"
chmod 0440 "/etc/sudoers.d/coi-$user"
visudo -cqf "/etc/sudoers.d/coi-$user"

install -d -o "$uid" -g "$uid" /workspace
echo "LANG=C.UTF-8" > /etc/default/locale

# `shutdown` would wait a minute and `poweroff` as `code` would be refused: both stop the
# container at once, so the session that asked ends cleanly. /usr/local/sbin comes first
# in sudo's secure_path and root's PATH; `code`'s PATH has no sbin, hence the links.
for name in shutdown poweroff; do
    cat > "/usr/local/sbin/$name" <<'WRAP'
#!/bin/sh
# coi: end the session now (the container stops; an ephemeral one is deleted).
[ "$(id -u)" = 0 ] || exec sudo -n "$0" "$@"
for arg in "$@"; do
    case "$arg" in
        -c) exec /usr/sbin/shutdown -c ;;
        -r | --reboot) sync; exec systemctl reboot ;;
    esac
done
sync
exec systemctl poweroff
WRAP
    chmod 0755 "/usr/local/sbin/$name"
    ln -sf "../sbin/$name" "/usr/local/bin/$name"
done
id "$user"
