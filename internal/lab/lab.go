// Package lab builds a world of network namespaces to try kvmnet, test it and
// benchmark it without touching the machine's network.
//
// A lab with prefix P has:
//
//	P-lan   the LAN router: bridge lan0 172.30.0.1/24 (the "physical" LAN),
//	        veth inet0 203.0.113.1/24 to the internet host, forwarding on,
//	        no NAT; dnsmasq serves DHCP (172.30.0.100-199) and DNS
//	        (router.lab, internet.lab) on lan0
//	P-inet  the internet host: eth0 203.0.113.10/24, default via the router
//	P-host  the KVM host where kvmnet runs (`kvmnet --netns P-host ...`):
//	        eth0 172.30.0.2/24 on the LAN, default via the router, resolver
//	        172.30.0.1 in /etc/netns/P-host/resolv.conf
//	P-vm-N  one per VM N of the config: for each interface i a veth whose
//	        host end, named as the interface's tap, sits in P-host for
//	        kvmnet to adopt, and whose guest end eth<i> carries the VM's MAC
//
// The lab keeps its state in /run/kvmnet/lab/P. Two labs with different
// prefixes can run at once. Everything here shells out to `ip` and friends:
// it is test infrastructure, and the tools are what a reader would type.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/kvmnet/kvmnet/internal/model"
)

// Options says which lab to build.
type Options struct {
	// Prefix names the lab and starts the name of each of its namespaces;
	// letters, digits and '-', at most 10 characters. Default "kvl".
	Prefix string
	// Config gives the VMs; each gets a namespace and a veth per interface.
	// Nil builds only the router, the internet host and the KVM host.
	Config *model.Config
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Lab is a lab that is up.
type Lab struct {
	st  state
	log *slog.Logger
}

// VM is a VM of the lab and its links.
type VM struct {
	// Name of the VM; its namespace is PREFIX-vm-NAME.
	Name string `json:"name"`
	// Links are the veths built for its interfaces.
	Links []Link `json:"links,omitempty"`
	// Skipped are the taps of interfaces with createTap: kvmnet creates
	// those itself, so the lab builds nothing for them.
	Skipped []string `json:"skipped,omitempty"`
}

// Link is one VM interface: a veth from the host namespace into the VM's.
type Link struct {
	// Index is the interface's position in the VM's interfaces.
	Index int `json:"index"`
	// Network is the network the interface is on.
	Network string `json:"network"`
	// Tap is the host end's name in PREFIX-host, as in the config.
	Tap string `json:"tap"`
	// Iface is the guest end's name in the VM's namespace, eth<Index>.
	Iface string `json:"iface"`
	// MAC is the guest end's address (lowercase).
	MAC string `json:"mac"`
}

// state is what a lab records in its directory (state.json) so Open can find
// it again from another process.
type state struct {
	Prefix     string    `json:"prefix"`
	Dir        string    `json:"dir"`
	Created    time.Time `json:"created"`
	Config     string    `json:"config,omitempty"`
	Namespaces []string  `json:"namespaces"`
	VMs        []VM      `json:"vms,omitempty"`
}

const stateFile = "state.json"

// Open returns the lab with the given prefix, which must be up.
func Open(prefix string) (*Lab, error) {
	return openLab(prefix, nil)
}

func openLab(prefix string, log *slog.Logger) (*Lab, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(labDir(prefix), stateFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if ns, _ := labNamespaces(prefix); len(ns) > 0 {
				return nil, fmt.Errorf("opening lab %q: namespaces %v exist but %s does not (an interrupted `lab up`?); run `kvmnet lab down --prefix %s`", prefix, ns, path, prefix)
			}
			return nil, fmt.Errorf("opening lab %q: it is not up; start it with `kvmnet lab up --prefix %s`", prefix, prefix)
		}
		return nil, fmt.Errorf("opening lab %q: %w", prefix, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("opening lab %q: reading %s: %w", prefix, path, err)
	}
	return &Lab{st: st, log: log.With("lab", prefix)}, nil
}

// Prefix is the lab's prefix.
func (l *Lab) Prefix() string { return l.st.Prefix }

// Dir is the lab's state directory (pid files, dnsmasq log and leases,
// udhcpc scripts and leases).
func (l *Lab) Dir() string { return l.st.Dir }

// Namespaces lists the lab's namespaces in the order they were made.
func (l *Lab) Namespaces() []string { return slices.Clone(l.st.Namespaces) }

// VMs lists the lab's VMs with their links.
func (l *Lab) VMs() []VM { return slices.Clone(l.st.VMs) }

// NS is the namespace of node: "lan", "inet", "host" or a VM's name.
func (l *Lab) NS(node string) string { return nsName(l.st.Prefix, node) }

// Nodes lists the lab's nodes: lan, inet, host, then the VMs.
func (l *Lab) Nodes() []string {
	nodes := []string{NodeLAN, NodeInet, NodeHost}
	for _, vm := range l.st.VMs {
		nodes = append(nodes, vm.Name)
	}
	return nodes
}

// checkNode refuses nodes the lab does not have, naming those it has.
func (l *Lab) checkNode(node string) error {
	if slices.Contains(l.Nodes(), node) {
		return nil
	}
	return fmt.Errorf("lab %q has no node %q; its nodes are %v", l.st.Prefix, node, l.Nodes())
}

// Exec runs a command in node's namespace (`ip netns exec`, so
// /etc/netns/NS files such as resolv.conf are bound over /etc) and returns
// its stdout. The error carries its stderr.
func (l *Lab) Exec(ctx context.Context, node string, args ...string) (string, error) {
	if err := l.checkNode(node); err != nil {
		return "", err
	}
	if len(args) == 0 {
		return "", fmt.Errorf("running in %s of lab %q: no command given", node, l.st.Prefix)
	}
	return run(ctx, "ip", append([]string{"netns", "exec", l.NS(node)}, args...)...)
}

// Command prepares a command in node's namespace, for long-running things
// (iperf3 servers, daemons) and for callers that want its streams. The
// returned command is `ip netns exec NS ARGS...`; ip execs ARGS, so the
// process, its pid and its exit status are the command's own. Canceling ctx
// kills it.
func (l *Lab) Command(ctx context.Context, node string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NS(node)}, args...)...)
}

// Down stops the lab; see the package-level Down.
func (l *Lab) Down() error { return down(l.st.Prefix, l.log) }

// writeState records st in the lab's directory, atomically.
func writeState(st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("recording lab %q: %w", st.Prefix, err)
	}
	path := filepath.Join(st.Dir, stateFile)
	if err := writeFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("recording lab %q: %w", st.Prefix, err)
	}
	return nil
}

// writeFileAtomic writes path through a temporary file and a rename, so
// readers never see half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
