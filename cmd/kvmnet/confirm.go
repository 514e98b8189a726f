package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/model"
	"github.com/kvmnet/kvmnet/internal/store"
)

// confirmer is what apply --confirm, confirm and get pending need of a
// backend.
type confirmer interface {
	ApplyConfirm(ctx context.Context, file string, doc []byte, window time.Duration, opt engine.ApplyOptions) (*api.PlanResult, error)
	Pending(ctx context.Context) (*store.Pending, error)
	Confirm(ctx context.Context) (*store.Pending, error)
	Expire(ctx context.Context, id, reason string) (*api.PlanResult, error)
}

var (
	_ confirmer = remote{}
	_ confirmer = (*local)(nil)
)

// ApplyConfirm without a daemon: the engine applies and probes here, and
// a detached helper process (kvmnet confirm-timer) holds the timer, so the
// rollback happens even if this process is killed right after.
func (l *local) ApplyConfirm(ctx context.Context, file string, doc []byte, window time.Duration, opt engine.ApplyOptions) (*api.PlanResult, error) {
	cfg, err := model.Parse(file, doc)
	if err != nil {
		return nil, err
	}
	p, pend, err := l.eng.ApplyConfirm(ctx, cfg, doc, window, 0, opt)
	if err != nil || pend == nil {
		return api.Result(p), err
	}
	pid, err := l.startTimer(pend)
	if err != nil {
		// No timer: never leave an unconfirmable change behind.
		_, rerr := l.eng.Expire(context.WithoutCancel(ctx), pend.ID, "the confirmation timer could not start")
		return nil, errors.Join(fmt.Errorf("starting the confirmation timer: %w; the apply was rolled back", err), rerr)
	}
	pend.Timer = pid
	if err := l.eng.Store.SetPending(*pend); err != nil {
		return nil, err
	}
	r := api.Result(p)
	r.Pending = pend
	return r, nil
}

// startTimer starts `kvmnet confirm-timer` in its own session, detached
// from this terminal, and returns its PID.
func (l *local) startTimer(pend *store.Pending) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	logf, err := store.OpenNoFollow(filepath.Join(l.g.StateDir(), "confirm-timer.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	args := []string{"--state-dir", l.g.StateDir()}
	if l.g.netns != "" {
		args = append(args, "--netns", l.g.netns)
	}
	args = append(args, "confirm-timer", "--id", pend.ID, "--deadline", pend.Deadline.Format(time.RFC3339Nano))
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return pid, nil
}

func (l *local) Pending(context.Context) (*store.Pending, error) { return l.eng.Pending() }

func (l *local) Confirm(context.Context) (*store.Pending, error) {
	p, err := l.eng.Confirm()
	if err == nil && p.Timer > 0 {
		// The timer has nothing left to do; it would find nothing at the
		// deadline anyway.
		syscall.Kill(p.Timer, syscall.SIGTERM)
	}
	return p, err
}

func (l *local) Expire(ctx context.Context, id, reason string) (*api.PlanResult, error) {
	p, err := l.eng.Expire(ctx, id, reason)
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

func (g *globals) confirmer(ctx context.Context) (confirmer, func(), error) {
	b, err := g.openBackend(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, ok := b.(confirmer)
	if !ok {
		b.Close()
		return nil, nil, errors.New("this backend cannot hold an apply for confirmation")
	}
	return c, b.Close, nil
}

func printPending(w io.Writer, p *store.Pending) {
	if p == nil {
		fmt.Fprintln(w, "nothing waits for confirmation (an apply that changes the desired state does)")
		return
	}
	left := time.Until(p.Deadline).Round(100 * time.Millisecond)
	when := fmt.Sprintf("in %s (at %s)", left, p.Deadline.Local().Format("15:04:05"))
	if left <= 0 {
		when = fmt.Sprintf("now (the deadline %s has passed)", p.Deadline.Local().Format("15:04:05"))
	}
	fmt.Fprintf(w, "revision %d (%s) waits for confirmation: run `kvmnet confirm` to keep it.\n", p.Revision, p.Source)
	if p.Previous == 0 {
		fmt.Fprintf(w, "without it, everything is destroyed %s\n", when)
	} else {
		fmt.Fprintf(w, "without it, revision %d is applied again %s\n", p.Previous, when)
	}
	if p.Probe != "" {
		fmt.Fprintf(w, "gateway probe: %s\n", p.Probe)
	}
	holder := "the daemon"
	if p.Timer > 0 {
		holder = fmt.Sprintf("kvmnet confirm-timer (pid %d)", p.Timer)
	}
	fmt.Fprintf(w, "timer held by %s\n", holder)
}

func newConfirmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "confirm",
		Short: "Keep an apply made with --confirm",
		Long: `An apply made with --confirm DURATION is rolled back when DURATION passes
unless it is confirmed: run this from a session that still reaches the host
(that is the proof that the change did not lock you out).`,
		Example: "  kvmnet apply -f host.yaml --confirm 2m\n  kvmnet get pending\n  kvmnet confirm",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := g.confirmer(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			p, err := c.Confirm(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "confirmed: revision %d stays\n", p.Revision)
			return nil
		},
	}
}

// newConfirmTimerCmd is the detached helper that rolls an unconfirmed
// apply back when no daemon holds the timer.
func newConfirmTimerCmd(g *globals) *cobra.Command {
	var id, deadline string
	cmd := &cobra.Command{
		Use:    "confirm-timer --id ID --deadline TIME",
		Short:  "Roll back an unconfirmed apply at its deadline (started by apply --confirm)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, err := time.Parse(time.RFC3339Nano, deadline)
			if err != nil {
				return fmt.Errorf("--deadline %q: %w", deadline, err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			signal.Ignore(syscall.SIGHUP)
			t := time.NewTimer(time.Until(at))
			select {
			case <-ctx.Done():
				return nil // confirmed
			case <-t.C:
			}
			// The store may be held for a moment by another command:
			// retry for a while, and through the daemon if one started.
			var last error
			for try := 0; try < 60; try++ {
				c, done, err := g.confirmer(context.Background())
				if err == nil {
					r, err := c.Expire(context.Background(), id, "not confirmed in time")
					done()
					if err == nil {
						if r != nil && !r.Empty {
							g.log.Warn("rolled back an unconfirmed apply", "id", id, "actions", r.Summary)
						}
						return nil
					}
				}
				last = err
				time.Sleep(500 * time.Millisecond) // the store is busy: try again
			}
			return fmt.Errorf("rolling back the unconfirmed apply %s: %w", id, last)
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the pending apply")
	cmd.Flags().StringVar(&deadline, "deadline", "", "when to roll back (RFC 3339)")
	return cmd
}
