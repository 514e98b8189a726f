// Package backend is the seam between the engine and a datapath. A host
// file's networks each name a backend (model.Network.Backend; linux by
// default); the engine gives every backend its part of the file
// (model.Config.ForBackend), and a backend observes its datapath, plans
// the difference, applies it with rollback and prints it. The engine,
// the daemon's API and the CLI know no more of a backend than its name.
//
// The Linux datapath of this host (bridges, taps, nftables, sysctls) is
// the engine's built-in backend; others are given to the engine by name
// (engine.Engine.Backends): OVN for networks spanning hosts.
package backend

import (
	"context"

	"github.com/kvmnet/kvmnet/internal/model"
)

// Backend carries the networks of a host file that name it.
type Backend interface {
	// Plan observes the datapath and plans want against it. want is the
	// backend's part of the file: its networks and the VM interfaces on
	// them, possibly none (then the plan removes what the backend holds).
	// An error about the file is a *model.Error from want.Errorf.
	Plan(ctx context.Context, want *model.Config) (Plan, error)
	// Apply carries p out. When a step fails, the steps done are undone
	// and the error says what failed and whether undoing worked.
	Apply(ctx context.Context, p Plan) error
	// Revert undoes an applied p: an apply of several backends that
	// fails in a later one reverts the earlier ones, last first.
	Revert(ctx context.Context, p Plan) error
	// Networks reports want's networks as the datapath holds them, for
	// kvmnet get networks.
	Networks(ctx context.Context, want *model.Config) ([]Network, error)
}

// Plan is what a backend will do, printable.
type Plan interface {
	// Empty reports whether applying the plan would change nothing.
	Empty() bool
	// String prints the plan, a step a line, as the commands a person
	// would type.
	String() string
	// Summary counts the steps by kind, for logs and the CLI.
	Summary() string
}

// Network is one network as its backend reports it.
type Network struct {
	Name string
	Mode string
	// State is "up", "down", "missing" or the backend's own word.
	State string
	// Ports are the VM interfaces configured on it, Attached those the
	// datapath has.
	Ports, Attached int
	// Notes are what the admin should know.
	Notes []string
}
