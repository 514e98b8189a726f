//go:build kernelfeatures

package apply_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/testutil/nstest"
)

const multiQueue = `
networks:
  - {name: dev, mode: nat, subnet: 192.168.100.0/24, egress: eth0}
vms:
  - name: vm1
    interfaces: [{network: dev, mac: "52:54:00:00:00:20", tap: vm1-0, createTap: true, queues: 4}]
`

// TestMultiQueueTapWithVhost attaches to a tap kvmnet created with queues: 4
// the way qemu does for a virtio-net NIC with 4 queue pairs and vhost=on:
// four queues opened with IFF_MULTI_QUEUE, each handed to its own
// /dev/vhost-net instance as the backend of an RX and a TX ring. A frame put
// on one TX ring must then come out of the tap, moved by the kernel's vhost
// worker, not by this process.
func TestMultiQueueTapWithVhost(t *testing.T) {
	ns := egressNS(t)
	nstest.Enter(t, ns)
	host, err := kernel.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if err := applyDoc(t, host, host, multiQueue); err != nil {
		t.Fatal(err)
	}
	if out := nstest.Run(t, ns, "ip", "-d", "link", "show", "vm1-0"); !strings.Contains(out, "multi_queue") {
		t.Fatalf("vm1-0 is not a multi-queue tap:\n%s", out)
	}
	// A multi-queue tap refuses a single-queue open.
	if fd, err := openQueue("vm1-0", false); err == nil {
		unix.Close(fd)
		t.Fatal("vm1-0 accepted a single-queue open")
	}

	var queues []int
	for i := range 4 {
		fd, err := openQueue("vm1-0", true)
		if err != nil {
			t.Fatalf("opening queue %d: %v", i, err)
		}
		defer unix.Close(fd)
		queues = append(queues, fd)
	}
	var devs []*vhostNet
	for i, q := range queues {
		v, err := attachVhost(q)
		if err != nil {
			t.Fatalf("attaching vhost-net to queue %d: %v", i, err)
		}
		defer v.close()
		devs = append(devs, v)
	}

	before := tapRxPackets(t, ns, "vm1-0")
	if err := devs[3].send(); err != nil {
		t.Fatal(err)
	}
	// Generous: under TCG on a busy machine the worker may wait its turn.
	deadline := time.Now().Add(30 * time.Second)
	for devs[3].txUsed() != 1 || tapRxPackets(t, ns, "vm1-0") == before {
		if time.Now().After(deadline) {
			t.Fatalf("the frame on queue 3's TX ring did not reach the tap in 30s (used ring index %d, tap rx_packets %d, was %d)",
				devs[3].txUsed(), tapRxPackets(t, ns, "vm1-0"), before)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a fixed wait
	}
}

// openQueue opens one queue of tap name, as qemu does for each queue of a
// virtio-net NIC with a vnet header.
func openQueue(name string, multi bool) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if multi {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attaching to tap %s: %w", name, err)
	}
	return fd, nil
}

// tapRxPackets reads the tap's count of frames received from its queues
// (from the guest, in qemu's terms). Through `ip netns exec`, which mounts
// the namespace's own /sys.
func tapRxPackets(t *testing.T, ns, name string) uint64 {
	t.Helper()
	out := nstest.Run(t, ns, "cat", "/sys/class/net/"+name+"/statistics/rx_packets")
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The vhost ioctls, from linux/vhost.h (type 0xAF).
const (
	vhostGetFeatures  = 2<<30 | 8<<16 | 0xAF<<8 | 0x00 // _IOR u64
	vhostSetFeatures  = 1<<30 | 8<<16 | 0xAF<<8 | 0x00 // _IOW u64
	vhostSetOwner     = 0xAF<<8 | 0x01                 // _IO
	vhostSetMemTable  = 1<<30 | 8<<16 | 0xAF<<8 | 0x03 // _IOW struct vhost_memory
	vhostSetVringNum  = 1<<30 | 8<<16 | 0xAF<<8 | 0x10 // _IOW struct vhost_vring_state
	vhostSetVringAddr = 1<<30 | 40<<16 | 0xAF<<8 | 0x11
	vhostSetVringBase = 1<<30 | 8<<16 | 0xAF<<8 | 0x12
	vhostSetVringKick = 1<<30 | 8<<16 | 0xAF<<8 | 0x20 // _IOW struct vhost_vring_file
	vhostSetVringCall = 1<<30 | 8<<16 | 0xAF<<8 | 0x21
	vhostNetSetBack   = 1<<30 | 8<<16 | 0xAF<<8 | 0x30

	ringSize = 256
	// Layout of one ring in the shared memory: descriptors, then the
	// available ring, then the used ring (4096 bytes each is enough for
	// 256 entries, and keeps the required alignments).
	ringBytes = 3 * 4096
	bufOffset = 2 * ringBytes // one frame buffer after the two rings
	memBytes  = bufOffset + 4096
)

type vringState struct{ index, num uint32 }
type vringFile struct {
	index uint32
	fd    int32
}
type vringAddr struct {
	index, flags                         uint32
	desc, used, avail, logGuestAddrUnset uint64
}
type memRegion struct{ guestPhys, size, userAddr, padding uint64 }
type memTable struct {
	nregions, padding uint32
	region            memRegion
}

// vhostNet is one /dev/vhost-net instance driving the RX (0) and TX (1)
// rings of one queue pair, with "guest memory" mapped in this process as
// qemu maps the guest's RAM.
type vhostNet struct {
	fd    int
	mem   []byte
	kicks [2]int
	calls [2]int
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// attachVhost does what qemu does for a vhost-net queue pair: take
// ownership, agree on features, describe guest memory, set up both rings
// and make the tap queue their backend.
func attachVhost(tapFD int) (*vhostNet, error) {
	fd, err := unix.Open("/dev/vhost-net", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/vhost-net: %w", err)
	}
	v := &vhostNet{fd: fd, kicks: [2]int{-1, -1}, calls: [2]int{-1, -1}}
	fail := func(what string, err error) (*vhostNet, error) {
		v.close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := ioctlPtr(fd, vhostSetOwner, nil); err != nil {
		return fail("VHOST_SET_OWNER", err)
	}
	var features uint64
	if err := ioctlPtr(fd, vhostGetFeatures, unsafe.Pointer(&features)); err != nil {
		return fail("VHOST_GET_FEATURES", err)
	}
	// No feature acked: the tap's own 10-byte vnet header travels in the
	// buffers, as with a legacy virtio-net device.
	var none uint64
	if err := ioctlPtr(fd, vhostSetFeatures, unsafe.Pointer(&none)); err != nil {
		return fail("VHOST_SET_FEATURES", err)
	}
	v.mem, err = unix.Mmap(-1, 0, memBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fail("mapping ring memory", err)
	}
	base := uint64(uintptr(unsafe.Pointer(&v.mem[0])))
	table := memTable{nregions: 1, region: memRegion{guestPhys: base, size: memBytes, userAddr: base}}
	if err := ioctlPtr(fd, vhostSetMemTable, unsafe.Pointer(&table)); err != nil {
		return fail("VHOST_SET_MEM_TABLE", err)
	}
	for i := range uint32(2) {
		ring := base + uint64(i)*ringBytes
		if err := ioctlPtr(fd, vhostSetVringNum, unsafe.Pointer(&vringState{i, ringSize})); err != nil {
			return fail("VHOST_SET_VRING_NUM", err)
		}
		if err := ioctlPtr(fd, vhostSetVringBase, unsafe.Pointer(&vringState{i, 0})); err != nil {
			return fail("VHOST_SET_VRING_BASE", err)
		}
		addr := vringAddr{index: i, desc: ring, avail: ring + 4096, used: ring + 8192}
		if err := ioctlPtr(fd, vhostSetVringAddr, unsafe.Pointer(&addr)); err != nil {
			return fail("VHOST_SET_VRING_ADDR", err)
		}
		if v.kicks[i], err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
			return fail("eventfd", err)
		}
		if v.calls[i], err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
			return fail("eventfd", err)
		}
		if err := ioctlPtr(fd, vhostSetVringKick, unsafe.Pointer(&vringFile{i, int32(v.kicks[i])})); err != nil {
			return fail("VHOST_SET_VRING_KICK", err)
		}
		if err := ioctlPtr(fd, vhostSetVringCall, unsafe.Pointer(&vringFile{i, int32(v.calls[i])})); err != nil {
			return fail("VHOST_SET_VRING_CALL", err)
		}
	}
	for i := range uint32(2) {
		if err := ioctlPtr(fd, vhostNetSetBack, unsafe.Pointer(&vringFile{i, int32(tapFD)})); err != nil {
			return fail("VHOST_NET_SET_BACKEND", err)
		}
	}
	return v, nil
}

// send puts one buffer on the TX ring, a zeroed vnet header and a 60-byte
// broadcast frame (broadcast so that nothing on the way filters it), and
// kicks the vhost worker.
func (v *vhostNet) send() error {
	const hdr = 10
	buf := v.mem[bufOffset : bufOffset+hdr+60]
	clear(buf)
	copy(buf[hdr:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x00, 0x00, 0x20, 0x88, 0xb5})
	tx := v.mem[ringBytes:]
	base := uint64(uintptr(unsafe.Pointer(&v.mem[0])))
	// Descriptor 0: {addr u64, len u32, flags u16, next u16}.
	*(*uint64)(unsafe.Pointer(&tx[0])) = base + bufOffset
	*(*uint32)(unsafe.Pointer(&tx[8])) = uint32(len(buf))
	// Available ring {flags u16, idx u16, ring[] u16}: entry 0 names
	// descriptor 0, then the index publishes it.
	*(*uint16)(unsafe.Pointer(&tx[4096+4])) = 0
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&tx[4096])), 1<<16)
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(v.kicks[1], one); err != nil {
		return fmt.Errorf("kicking the TX ring: %w", err)
	}
	return nil
}

// txUsed is the TX used ring's index: how many buffers vhost has consumed.
func (v *vhostNet) txUsed() uint16 {
	w := atomic.LoadUint32((*uint32)(unsafe.Pointer(&v.mem[ringBytes+8192])))
	return uint16(w >> 16)
}

func (v *vhostNet) close() {
	unix.Close(v.fd)
	for _, fd := range append(v.kicks[:], v.calls[:]...) {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	if v.mem != nil {
		unix.Munmap(v.mem)
	}
}
