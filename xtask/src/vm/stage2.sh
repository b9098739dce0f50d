#!/run/vm/busybox sh
# Stage 2, PID 1 in the guest's root (the host's files, see init.sh): the filesystems a
# privileged eBPF program and its tests expect, then the command, then power off.
# $1: the run directory (9p, shared with the host); $2: the extracted kernel package.
B=/run/vm/busybox
OUT=$1
KERNEL=$2
m() {
    $B mkdir -p "$3" 2>/dev/null
    $B mount -t "$1" "$2" "$3" ${4:+-o "$4"} || echo "vm: mounting $1 on $3 failed"
}
m devpts devpts /dev/pts ptmxmode=0666
m tmpfs tmpfs /dev/shm mode=1777
m bpf bpf /sys/fs/bpf
m tracefs tracefs /sys/kernel/tracing
m debugfs debugfs /sys/kernel/debug
m securityfs securityfs /sys/kernel/security
m cgroup2 cgroup2 /sys/fs/cgroup
$B ln -sf /proc/self/fd /dev/fd
$B ln -sf /proc/self/fd/0 /dev/stdin
$B ln -sf /proc/self/fd/1 /dev/stdout
$B ln -sf /proc/self/fd/2 /dev/stderr
V=$($B uname -r)
# The guest kernel's modules where modprobe looks, and its config where libbpf looks for
# __kconfig externs (/boot/config-$(uname -r)); the host's own are for another kernel.
$B mkdir -p "/lib/modules/$V" && $B mount --bind "$KERNEL/lib/modules/$V" "/lib/modules/$V"
$B cp "$KERNEL/boot/config-$V" "$KERNEL/boot/System.map-$V" /boot/ 2>/dev/null
$B hostname vm-guest
$B ip link set lo up
# When the command starts, for the host's boot-time report.
$B cut -d' ' -f1 /proc/uptime >"$OUT/started"
echo "vm: command starts at uptime $($B cat "$OUT/started") s" >/dev/ttyS0
# The host's shell, not busybox's: busybox's would run its own applets (ls, ip, ...) in place
# of the host's programs of the same name.
/bin/sh "$OUT/command.sh" >"$OUT/output.log" 2>&1 </dev/null
echo $? >"$OUT/exit-status"
echo "vm: command exited with status $($B cat "$OUT/exit-status")" >/dev/ttyS0
$B sync
$B poweroff -f
