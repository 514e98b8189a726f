#!/bin/busybox sh
# The guest's first process. It mounts the host's root filesystem (virtio-9p,
# read-only) under a tmpfs overlay, the kernel's modules at /lib/modules and
# the run directory at /run/vmtest, runs /run/vmtest/cmd.sh there, writes its
# exit status to /run/vmtest/status, and resets the machine, which ends qemu
# (it runs with -no-reboot).
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "vmtest init: $*" >/dev/console
	reboot -f
}

while read -r m; do
	insmod "/modules/$m" || fail "loading module $m"
done </modules/order

# msize: the 8 KiB default makes every read of a test binary thousands of
# round trips. cache=loose is safe because the shares do not change while
# the guest runs.
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" kvmnet-root /lower || fail "mounting the host's root"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "mounting the overlay's tmpfs"
mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "mounting the overlay"

r=/newroot
mkdir -p $r/lib/modules $r/proc $r/sys $r/dev $r/tmp $r/run
mount -t 9p -o "$opts,ro,cache=loose" kvmnet-modules $r/lib/modules || fail "mounting the modules"
mount -t proc proc $r/proc
mount -t sysfs sysfs $r/sys
mount -t devtmpfs devtmpfs $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs tmpfs $r/dev/shm
# /tmp stays the overlay's: the host's /tmp shows through (a checkout or a
# CI clone may live there, and the test binaries with it), and what the
# guest writes lands in the overlay's tmpfs.
mount -t tmpfs -o mode=0755 tmpfs $r/run
mkdir -p $r/run/vmtest $r/sys/fs/cgroup
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
mount -t 9p -o "$opts" kvmnet-run $r/run/vmtest || fail "mounting the run directory"

# As on a Debian system (kmod static-nodes at boot), opening /dev/net/tun or
# /dev/vhost-net loads its module.
while read -r mod name dev; do
	case "$mod" in "#"*|"") continue ;; esac
	[ -e "$r/dev/$name" ] && continue
	nums=${dev#?}
	mkdir -p "$(dirname "$r/dev/$name")"
	mknod "$r/dev/$name" "${dev%"$nums"}" "${nums%:*}" "${nums#*:}"
done <"$r/lib/modules/$(uname -r)/modules.devname"

# The kernel loads modules on demand (a vlan link, an nftables expression)
# by running this helper from init's root, which is this initramfs: have it
# run the host's modprobe in the shared root.
printf '#!/bin/busybox sh\nexec chroot /newroot /sbin/modprobe "$@"\n' >/modprobe
chmod 755 /modprobe
echo /modprobe >/proc/sys/kernel/modprobe

hostname vmtest
ip link set lo up
chroot $r /bin/sh /run/vmtest/cmd.sh </dev/null >/dev/console 2>&1
echo $? >$r/run/vmtest/status
sync
reboot -f
