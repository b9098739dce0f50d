#!/bin/busybox sh
# Stage 1, PID 1 in the initramfs that xtask/src/vm/initramfs.rs builds: load the modules
# that reach the host's files, build the guest's root from them, and switch to it.
#
# The root is the host's "/" over virtio-9p, read-only, under an overlayfs whose upper layer
# is a tmpfs: every path is writable (/tmp, /root, the checkout's target/ ...) but nothing
# written reaches the host, and all of it is gone at power-off. Only the run directory, a
# second 9p share mounted at the same path as on the host, carries results back.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs dev /dev
# In dependency order (modprobe --show-depends), decompressed: busybox's insmod reads neither
# modules.dep nor compressed modules.
for k in /ko/*.ko; do
    $B insmod "$k" || echo "vm: insmod $k failed"
done
for a in $($B cat /proc/cmdline); do
    case $a in
        xtask.out=*) OUT=${a#xtask.out=} ;;
        xtask.kernel=*) KERNEL=${a#xtask.kernel=} ;;
    esac
done
fail() {
    echo "vm: $*"
    $B sleep 1
    $B poweroff -f
}
# cache=loose: the host's tree does not change under the guest in a way the command must see,
# and without a cache every exec and stat is a round trip to qemu.
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower ||
    fail "mounting the host's root over 9p failed"
$B mount -t tmpfs -o mode=755 tmpfs /upper && $B mkdir -p /upper/u /upper/w
if ! $B mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot; then
    echo "vm: overlayfs failed, using a read-only root with tmpfs on /tmp, /var/tmp and /root"
    $B mount --bind /lower /newroot
    for d in /tmp /var/tmp /root; do $B mount -t tmpfs tmpfs "/newroot$d"; done
fi
# Stage 2 and its busybox must live inside the new root; a fresh /run holds them.
$B mount -t tmpfs -o mode=755 tmpfs /newroot/run
$B mkdir -p /newroot/run/vm "/newroot$OUT"
$B cp /bin/busybox /stage2 /newroot/run/vm/
# No cache: the host reads the command's output while the guest writes it.
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "/newroot$OUT" ||
    fail "mounting the run directory over 9p failed"
$B mount --move /dev /newroot/dev
$B mount --move /proc /newroot/proc
$B mount --move /sys /newroot/sys
exec $B switch_root /newroot /run/vm/busybox sh /run/vm/stage2 "$OUT" "$KERNEL"
