package engine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kvmnet/kvmnet/internal/store"
)

// journal records the names of links an apply is about to create. Links
// are created and marked (alias) in two kernel requests; if the process dies
// in between, the next plan finds the name here and claims the unmarked
// link instead of refusing it as someone else's.
type journal struct{ path string }

// add appends name and syncs it to disk before the link is created.
func (j journal) add(name string) error {
	if j.path == "" {
		return nil
	}
	// Never through a link: one planted in the state dir would have
	// kvmnet append to whatever it points at.
	f, err := store.OpenNoFollow(j.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing apply journal: %w", err)
	}
	if _, err := fmt.Fprintln(f, name); err != nil {
		f.Close()
		return fmt.Errorf("writing apply journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing apply journal: %w", err)
	}
	return f.Close()
}

// names returns the journaled names.
func (j journal) names() (map[string]bool, error) {
	out := map[string]bool{}
	if j.path == "" {
		return out, nil
	}
	f, err := store.OpenNoFollow(j.path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading apply journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n := strings.TrimSpace(sc.Text()); n != "" {
			out[n] = true
		}
	}
	return out, sc.Err()
}

// clear empties the journal once an apply has ended (done or rolled back):
// every link it created is marked or deleted again.
func (j journal) clear() error {
	if j.path == "" {
		return nil
	}
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clearing apply journal: %w", err)
	}
	return nil
}
