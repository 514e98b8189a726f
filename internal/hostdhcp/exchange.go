package hostdhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DHCP's UDP ports (RFC 2131 section 4.1).
const (
	serverPort = dhcpv4.ServerPort
	clientPort = dhcpv4.ClientPort
)

// maxMessageSize is what option 57 announces: an Ethernet frame's worth,
// as nclient4 announces. Replies are read into a larger buffer all the
// same, so that a server that ignores the option is still heard.
const maxMessageSize = 1500

// limitedBroadcast is where DISCOVER, the SELECTING REQUEST and REBIND go.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// NAKError is a DHCPNAK: the server refuses the address asked for.
type NAKError struct {
	// Server is the server identifier of the NAK, if it had one.
	Server netip.Addr
	// Message is the server's explanation (option 56), often empty.
	Message string
}

func (e *NAKError) Error() string {
	s := "server refused the address (DHCPNAK)"
	if e.Server.IsValid() {
		s = fmt.Sprintf("server %s refused the address (DHCPNAK)", e.Server)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// errNoReply is returned by exchange when its context's deadline passes.
var errNoReply = errors.New("no reply")

// exchange sends req to dst from conn and returns the first reply that
// answers it (same xid and chaddr) and that accept takes. It retransmits
// with the backoff of RFC 2131 section 4.1 until ctx ends: on cancellation
// it returns ctx.Err(), at ctx's deadline errNoReply.
func exchange(ctx context.Context, conn net.PacketConn, dst netip.Addr, req *dhcpv4.DHCPv4, accept func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
	// A read blocked in the kernel does not watch ctx: a deadline in the
	// past wakes it.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	to := &net.UDPAddr{IP: dst.AsSlice(), Port: serverPort}
	out := req.ToBytes()
	buf := make([]byte, 1<<16)
	for try := 0; ; try++ {
		if _, err := conn.WriteTo(out, to); err != nil {
			return nil, fmt.Errorf("sending %s to %s: %w", req.MessageType(), dst, err)
		}
		jitter := time.Duration(rand.Int64N(int64(2*time.Second))) - time.Second
		conn.SetReadDeadline(time.Now().Add(retransmit(try, jitter)))
		// Checked after setting the deadline, which may have overwritten
		// the one the AfterFunc set: ctx.Err is set before that runs.
		if err := ctx.Err(); err != nil {
			return nil, ctxErr(err)
		}
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctxErr(ctx.Err())
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // retransmit
				}
				return nil, fmt.Errorf("waiting for a reply to %s: %w", req.MessageType(), err)
			}
			m, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || m.OpCode != dhcpv4.OpcodeBootReply ||
				m.TransactionID != req.TransactionID ||
				!bytes.Equal(m.ClientHWAddr, req.ClientHWAddr) {
				continue // someone else's conversation, or noise
			}
			if accept(m) {
				return m, nil
			}
		}
	}
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errNoReply
	}
	return err
}

// isType accepts replies of the given message types.
func isType(types ...dhcpv4.MessageType) func(*dhcpv4.DHCPv4) bool {
	return func(m *dhcpv4.DHCPv4) bool {
		for _, t := range types {
			if m.MessageType() == t {
				return true
			}
		}
		return false
	}
}

// asNAK turns a DHCPNAK into a *NAKError, and returns nil for anything else.
func asNAK(m *dhcpv4.DHCPv4) error {
	if m.MessageType() != dhcpv4.MessageTypeNak {
		return nil
	}
	srv, _ := addr4(m.ServerIdentifier())
	return &NAKError{Server: srv, Message: m.Message()}
}

// options are the modifiers every message of this client carries.
func (c *Client) options() []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithRequestedOptions(
			dhcpv4.OptionSubnetMask,
			dhcpv4.OptionRouter,
			dhcpv4.OptionBroadcastAddress,
			dhcpv4.OptionIPAddressLeaseTime,
			dhcpv4.OptionRenewTimeValue,
			dhcpv4.OptionRebindingTimeValue,
		),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(maxMessageSize)),
	}
	if c.cfg.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(c.cfg.Hostname)))
	}
	if len(c.cfg.ClientID) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(c.cfg.ClientID)))
	}
	return mods
}

// newDiscover builds the DISCOVER of the SELECTING state. The broadcast
// flag asks the server to broadcast its OFFER and ACK: a UDP socket cannot
// receive a unicast to an address the interface does not have yet.
func (c *Client) newDiscover(mac net.HardwareAddr, want netip.Addr) (*dhcpv4.DHCPv4, error) {
	mods := append(c.options(), dhcpv4.WithBroadcast(true))
	if want.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want.AsSlice())))
	}
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		return nil, fmt.Errorf("building DHCPDISCOVER: %w", err)
	}
	return m, nil
}

// newSelect builds the REQUEST that takes an OFFER (RFC 2131 section
// 4.3.2, SELECTING): broadcast, same xid, server identifier and requested
// address set, ciaddr zero.
func (c *Client) newSelect(offer *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	m, err := dhcpv4.NewRequestFromOffer(offer, append(c.options(), dhcpv4.WithBroadcast(true))...)
	if err != nil {
		return nil, fmt.Errorf("building DHCPREQUEST: %w", err)
	}
	return m, nil
}

// newExtend builds the REQUEST of the RENEWING and REBINDING states (RFC
// 2131 section 4.3.2): a fresh xid, ciaddr set to the leased address, no
// server identifier and no requested address. The server answers to ciaddr.
func (c *Client) newExtend(mac net.HardwareAddr, addr netip.Addr) (*dhcpv4.DHCPv4, error) {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(addr.AsSlice()),
	}, c.options()...)...)
	if err != nil {
		return nil, fmt.Errorf("building DHCPREQUEST: %w", err)
	}
	return m, nil
}
