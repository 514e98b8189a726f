package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kvmnet/kvmnet/internal/api"
	datapath "github.com/kvmnet/kvmnet/internal/backend"
	"github.com/kvmnet/kvmnet/internal/baseline"
	"github.com/kvmnet/kvmnet/internal/doctor"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/kernel"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/netnsexec"
	"github.com/kvmnet/kvmnet/internal/store"
)

// backend is what the verbs need: the daemon through its socket when one
// runs, otherwise the engine working on the kernel directly.
type backend interface {
	Plan(ctx context.Context, file string, doc []byte) (*api.PlanResult, error)
	Apply(ctx context.Context, file string, doc []byte, opt engine.ApplyOptions) (*api.PlanResult, error)
	Destroy(ctx context.Context) (*api.PlanResult, error)
	Status(ctx context.Context) (*engine.Status, error)
	Desired(ctx context.Context) (file string, doc []byte, err error)
	Revisions(ctx context.Context) ([]store.Revision, error)
	Revision(ctx context.Context, rev uint64) ([]byte, error)
	Events(ctx context.Context, since uint64) ([]store.Event, error)
	SaveBaseline(ctx context.Context, name string, data []byte) error
	Baseline(ctx context.Context, name string) ([]byte, error)
	Baselines(ctx context.Context) ([]string, error)
	Close()
}

type remote struct{ *api.Client }

func (remote) Close() {}

// local runs the engine in this process.
type local struct {
	eng         *engine.Engine
	closeKernel func()
	g           *globals
}

func (l *local) Plan(ctx context.Context, file string, doc []byte) (*api.PlanResult, error) {
	cfg, err := model.Parse(file, doc)
	if err != nil {
		return nil, err
	}
	p, err := l.eng.Plan(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

func (l *local) Apply(ctx context.Context, file string, doc []byte, opt engine.ApplyOptions) (*api.PlanResult, error) {
	cfg, err := model.Parse(file, doc)
	if err != nil {
		return nil, err
	}
	p, err := l.eng.Apply(ctx, cfg, doc, opt)
	if err != nil {
		return nil, err
	}
	l.eng.Keep(cfg, doc) // the next `kvmnet forward add` need not parse doc
	return api.Result(p), nil
}

func (l *local) Destroy(ctx context.Context) (*api.PlanResult, error) {
	p, err := l.eng.Destroy(ctx)
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

func (l *local) Status(ctx context.Context) (*engine.Status, error) { return l.eng.Status(ctx) }

func (l *local) Desired(context.Context) (string, []byte, error) { return l.eng.DesiredDoc() }

func (l *local) Revisions(context.Context) ([]store.Revision, error) { return l.eng.Store.Revisions() }

func (l *local) Revision(_ context.Context, rev uint64) ([]byte, error) {
	return l.eng.Store.Revision(rev)
}

func (l *local) Events(_ context.Context, since uint64) ([]store.Event, error) {
	return l.eng.Store.Events(since)
}

func (l *local) SaveBaseline(_ context.Context, name string, data []byte) error {
	return l.eng.Store.SaveBaseline(name, data)
}

func (l *local) Baseline(_ context.Context, name string) ([]byte, error) {
	return l.eng.Store.Baseline(name)
}

func (l *local) Baselines(context.Context) ([]string, error) { return l.eng.Store.Baselines() }

func (l *local) Close() {
	l.eng.Store.Close()
	l.closeKernel()
}

// dbPath is the state database of the namespace.
func (g *globals) dbPath() string { return filepath.Join(g.StateDir(), "state.db") }

// openBackend returns the daemon's API when it answers, else a local engine.
func (g *globals) openBackend(ctx context.Context) (backend, error) {
	c := api.NewClient(g.Socket())
	if _, err := os.Stat(g.Socket()); err == nil {
		err := c.Ping(ctx)
		if err == nil {
			g.log.Debug("using the daemon", "socket", g.Socket())
			return remote{c}, nil
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("the daemon's socket %s refuses this user: run as root, or as a member of the group the daemon was given with --socket-group", g.Socket())
		}
	}
	// A command that a daemon may serve has not entered --netns yet
	// (re-executing into it costs a process start).
	if g.netns != "" {
		if err := netnsexec.Enter(g.netns); err != nil {
			return nil, err
		}
	}
	eng, closeKernel, err := g.openLocalEngine()
	if err != nil {
		return nil, err
	}
	return &local{eng: eng, closeKernel: closeKernel, g: g}, nil
}

// hostReader is the kernel as doctor and baseline read it.
type hostReader interface {
	doctor.Kernel
	baseline.Kernel
}

// deps are what the commands work on: the kernel and the backends besides
// it. main uses realDeps; tests give a kernel in memory.
type deps struct {
	// openKernel opens this namespace's Linux datapath for a command that
	// works without a daemon.
	openKernel func() (engine.Kernel, func(), error)
	// backends are the backends besides linux, by name.
	backends map[string]datapath.Backend
	// openDoctor opens this namespace's kernel for `kvmnet doctor` and
	// `kvmnet baseline`.
	openDoctor func() (hostReader, func(), error)
}

// realDeps open the kernel of the namespace the process is in; this
// kvmnet has no backend besides linux yet.
func realDeps() deps {
	return deps{openKernel: func() (engine.Kernel, func(), error) {
		return openHost("kvmnet changes the kernel's network configuration")
	}, openDoctor: func() (hostReader, func(), error) {
		return openHost("kvmnet doctor reads the kernel's network configuration")
	}}
}

// openHost opens the kernel of this namespace, as root only; what says
// why root is needed.
func openHost(what string) (*kernel.Host, func(), error) {
	if os.Geteuid() != 0 {
		return nil, nil, errors.New(what + " and needs root (run it with sudo)")
	}
	host, err := kernel.Open()
	if err != nil {
		return nil, nil, err
	}
	return host, host.Close, nil
}

// openLocalEngine opens the store and the kernel of deps.
func (g *globals) openLocalEngine() (*engine.Engine, func(), error) {
	k, closeKernel, err := g.deps.openKernel()
	if err != nil {
		return nil, nil, err
	}
	st, err := store.Open(g.dbPath())
	if err != nil {
		closeKernel()
		return nil, nil, err
	}
	return &engine.Engine{Store: st, Kernel: k, Log: g.log, Journal: filepath.Join(g.StateDir(), "journal"), Backends: g.deps.backends}, closeKernel, nil
}

// openEngine opens the store and the kernel of this namespace.
func (g *globals) openEngine() (*engine.Engine, *kernel.Host, error) {
	if os.Geteuid() != 0 {
		return nil, nil, errors.New("kvmnet changes the kernel's network configuration and needs root (run it with sudo)")
	}
	st, err := store.Open(g.dbPath())
	if err != nil {
		return nil, nil, err
	}
	host, err := kernel.Open()
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("%w", err)
	}
	return &engine.Engine{Store: st, Kernel: host, Log: g.log, Journal: filepath.Join(g.StateDir(), "journal"), Backends: g.deps.backends}, host, nil
}
