// Package backendtest is a backend for tests: it keeps its networks in
// memory, so tests can show that the engine, the API and the CLI carry a
// network to whichever backend it names, and that a failing backend takes
// the others back with it.
package backendtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/model"
)

// ErrFail is the failure of a Recorder told to fail.
var ErrFail = errors.New("the test backend was told to fail")

// Recorder is a backend whose datapath is a set of network names and the
// VM interfaces on each ("vm/mac").
type Recorder struct {
	mu   sync.Mutex
	nets map[string][]string
	// Fail makes Apply fail (after it changed nothing).
	Fail bool
	// Applied counts successful applies, Reverted reverts.
	Applied, Reverted int
}

var _ backend.Backend = (*Recorder)(nil)

// New returns an empty Recorder.
func New() *Recorder { return &Recorder{nets: map[string][]string{}} }

// step is one change: add or remove a network with its ports.
type step struct {
	add   bool
	name  string
	ports []string
}

// Plan is a Recorder's plan.
type Plan struct{ steps []step }

func (p *Plan) Empty() bool { return len(p.steps) == 0 }

func (p *Plan) String() string {
	var b strings.Builder
	for _, s := range p.steps {
		verb := "remove"
		if s.add {
			verb = "add"
		}
		fmt.Fprintf(&b, "test-backend %s network %s ports [%s]\n", verb, s.name, strings.Join(s.ports, " "))
	}
	return b.String()
}

func (p *Plan) Summary() string { return fmt.Sprintf("%d network changes", len(p.steps)) }

// ports are the interfaces want has on each of its networks.
func ports(want *model.Config) map[string][]string {
	out := map[string][]string{}
	for _, n := range want.Networks {
		out[n.Name] = []string{}
	}
	for _, vm := range want.VMs {
		for _, ifc := range vm.Interfaces {
			out[ifc.Network] = append(out[ifc.Network], vm.Name+"/"+ifc.MAC)
		}
	}
	return out
}

// Plan implements backend.Backend.
func (r *Recorder) Plan(_ context.Context, want *model.Config) (backend.Plan, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, n := range want.Networks {
		if n.Mode != model.ModeNAT {
			return nil, want.Errorf(fmt.Sprintf("networks[%d].mode", i), "the test backend carries nat networks only")
		}
	}
	wanted := ports(want)
	p := &Plan{}
	for _, name := range slices.Sorted(maps.Keys(r.nets)) {
		if w, ok := wanted[name]; !ok || !slices.Equal(w, r.nets[name]) {
			p.steps = append(p.steps, step{name: name, ports: r.nets[name]})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(wanted)) {
		if have, ok := r.nets[name]; !ok || !slices.Equal(have, wanted[name]) {
			p.steps = append(p.steps, step{add: true, name: name, ports: wanted[name]})
		}
	}
	return p, nil
}

// Apply implements backend.Backend.
func (r *Recorder) Apply(_ context.Context, bp backend.Plan) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Fail {
		return ErrFail
	}
	for _, s := range bp.(*Plan).steps {
		if s.add {
			r.nets[s.name] = s.ports
		} else {
			delete(r.nets, s.name)
		}
	}
	r.Applied++
	return nil
}

// Revert implements backend.Backend.
func (r *Recorder) Revert(_ context.Context, bp backend.Plan) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	steps := bp.(*Plan).steps
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		if s.add {
			delete(r.nets, s.name)
		} else {
			r.nets[s.name] = s.ports
		}
	}
	r.Reverted++
	return nil
}

// Networks implements backend.Backend.
func (r *Recorder) Networks(_ context.Context, want *model.Config) ([]backend.Network, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wanted := ports(want)
	var out []backend.Network
	for _, n := range want.Networks {
		st := "missing"
		have, ok := r.nets[n.Name]
		if ok {
			st = "up"
		}
		out = append(out, backend.Network{Name: n.Name, Mode: string(n.Mode), State: st, Ports: len(wanted[n.Name]), Attached: len(have)})
	}
	return out, nil
}

// Dump is the datapath, one network a line.
func (r *Recorder) Dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(r.nets)) {
		fmt.Fprintf(&b, "%s [%s]\n", name, strings.Join(r.nets[name], " "))
	}
	return b.String()
}
