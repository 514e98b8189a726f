package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The latency probe is a UDP request/response pair written here rather
// than ping: it crosses the same path as the UDP bench (conntrack, NAT and
// forwards treat it as they treat a guest's UDP), and it runs on blocking
// sockets on locked OS threads, so the only wake-ups in a round trip are the
// kernel's, not the Go scheduler's.

// probeSize is the size of a probe datagram: small, as a request is.
const probeSize = 64

// probeMagic starts every probe datagram, so strays are not counted.
const probeMagic = 0x6b766d62 // "kvmb"

// inNetns runs fn on an OS thread that has entered network namespace ns
// (a name under /run/netns). Sockets fn opens live in ns for good. The
// thread stays locked and is never unlocked, so the Go runtime ends it when
// the goroutine returns instead of handing a thread in the wrong namespace
// to other goroutines (the trap containernetworking's pkg/ns describes).
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- fmt.Errorf("opening network namespace %q: %w", ns, err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("entering network namespace %q: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// udpSocket opens a blocking IPv4 UDP socket bound to bind whose reads
// give up after timeout.
func udpSocket(bind netip.AddrPort, timeout time.Duration) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening a UDP socket: %w", err)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("setting the UDP socket's read timeout: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("setting SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: bind.Addr().As4(), Port: int(bind.Port())}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding a UDP socket to %s: %w", bind, err)
	}
	return fd, nil
}

// Echo is a UDP echo server running in a network namespace on its own OS
// thread. It answers every probe datagram with the datagram itself. On the
// same port it accepts TCP connections and closes them: WaitTCP's target,
// so a path's TCP is known to get through before iperf3 runs over it.
type Echo struct {
	stop atomic.Bool
	done chan struct{}
	tcp  net.Listener
}

// echoPoll is how often a blocked echo server looks at its stop flag.
const echoPoll = 100 * time.Millisecond

// StartEcho starts an echo server on UDP port in namespace ns, listening on
// every address. It returns once the socket is bound.
func StartEcho(ns string, port uint16) (*Echo, error) {
	e := &Echo{done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(e.done)
		err := inNetns(ns, func() error {
			fd, err := udpSocket(netip.AddrPortFrom(netip.IPv4Unspecified(), port), echoPoll)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			// The listening socket is made on this thread, so it is
			// ns's; accepting on it needs no namespace.
			if e.tcp, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
				return err
			}
			go acceptAndClose(e.tcp)
			ready <- nil
			buf := make([]byte, 2048)
			for !e.stop.Load() {
				n, from, err := unix.Recvfrom(fd, buf, 0)
				if err != nil || n < 8 || binary.BigEndian.Uint32(buf) != probeMagic {
					continue // timeout (EAGAIN), EINTR, or not a probe
				}
				_ = unix.Sendto(fd, buf[:n], 0, from)
			}
			return nil
		})
		if err != nil {
			ready <- fmt.Errorf("echo server in %s: %w", ns, err)
		}
	}()
	if err := <-ready; err != nil {
		<-e.done
		return nil, err
	}
	return e, nil
}

// acceptAndClose accepts connections on ln and closes them, until ln is
// closed.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Close stops the server and waits for its thread to end.
func (e *Echo) Close() {
	e.stop.Store(true)
	if e.tcp != nil {
		e.tcp.Close()
	}
	<-e.done
}

// WaitTCP connects from namespace ns to dst (an Echo's port) until a
// connection is made or within has passed, each attempt given a second.
// It returns how many attempts it took and how long.
func WaitTCP(ctx context.Context, ns string, dst netip.AddrPort, within time.Duration) (attempts int, took time.Duration, err error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	err = inNetns(ns, func() error {
		// The dialer makes its socket on this thread, in ns.
		d := net.Dialer{Timeout: time.Second}
		retry := time.NewTicker(100 * time.Millisecond)
		defer retry.Stop()
		for {
			attempts++
			c, err := d.DialContext(ctx, "tcp4", dst.String())
			if err == nil {
				c.Close()
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("no TCP connection in %s (%d attempts; the last: %w)", within, attempts, err)
			case <-retry.C:
			}
		}
	})
	if err != nil {
		err = fmt.Errorf("connecting to %s from %s: %w", dst, ns, err)
	}
	return attempts, time.Since(start), err
}

// Latency is the outcome of one probe run.
type Latency struct {
	// Sent and Lost count the measured probes (warm-up ones excluded).
	Sent int `json:"sent"`
	Lost int `json:"lost"`
	// P50 and P99 are round-trip times in microseconds.
	P50 float64 `json:"p50Us"`
	P99 float64 `json:"p99Us"`
	// RTTs are the round-trip times of the answered probes, in
	// microseconds, in the order they were sent.
	RTTs []float64 `json:"-"`
}

// ProbeOptions say how to probe.
type ProbeOptions struct {
	// Count is the number of measured probes; Warmup probes go first and
	// are not counted (they pay for ARP and for the connection-tracking
	// entry).
	Count, Warmup int
	// Timeout is how long one probe waits for its answer before it counts
	// as lost.
	Timeout time.Duration
}

// Probe sends probes one after the other from namespace ns to dst, each
// waiting for its answer, and reports the round-trip times. It fails when
// no probe at all is answered.
func Probe(ctx context.Context, ns string, dst netip.AddrPort, o ProbeOptions) (Latency, error) {
	if o.Timeout <= 0 {
		o.Timeout = 200 * time.Millisecond
	}
	var res Latency
	err := inNetns(ns, func() error {
		fd, err := udpSocket(netip.AddrPortFrom(netip.IPv4Unspecified(), 0), o.Timeout)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
			return fmt.Errorf("connecting the probe socket to %s: %w", dst, err)
		}
		out := make([]byte, probeSize)
		in := make([]byte, 2048)
		binary.BigEndian.PutUint32(out, probeMagic)
		for seq := uint32(0); int(seq) < o.Warmup+o.Count; seq++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			binary.BigEndian.PutUint32(out[4:], seq)
			measured := int(seq) >= o.Warmup
			if measured {
				res.Sent++
			}
			rtt, ok := roundTrip(fd, out, in, seq, o.Timeout)
			switch {
			case !ok && measured:
				res.Lost++
			case ok && measured:
				res.RTTs = append(res.RTTs, float64(rtt.Nanoseconds())/1e3)
			}
		}
		return nil
	})
	if err != nil {
		return Latency{}, fmt.Errorf("probing %s from %s: %w", dst, ns, err)
	}
	if len(res.RTTs) == 0 {
		return res, fmt.Errorf("probing %s from %s: none of %d probes was answered", dst, ns, res.Sent)
	}
	res.P50 = Percentile(res.RTTs, 50)
	res.P99 = Percentile(res.RTTs, 99)
	return res, nil
}

// roundTrip sends one probe and waits until its own answer comes back or
// timeout passes; late answers to earlier probes are skipped.
func roundTrip(fd int, out, in []byte, seq uint32, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	if _, err := unix.Write(fd, out); err != nil {
		return 0, false
	}
	for {
		n, err := unix.Read(fd, in)
		now := time.Now()
		if err != nil {
			if errors.Is(err, unix.EINTR) && now.Sub(start) < timeout {
				continue
			}
			// EAGAIN: timed out; ECONNREFUSED: an ICMP error came back.
			return 0, false
		}
		if n >= 8 && binary.BigEndian.Uint32(in) == probeMagic && binary.BigEndian.Uint32(in[4:]) == seq {
			return now.Sub(start), true
		}
		if now.Sub(start) >= timeout {
			return 0, false
		}
	}
}
