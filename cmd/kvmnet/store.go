package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/store"
)

// exitDamaged is the exit code of a command that found the state database
// damaged or lost (see store.IsCorrupt); 1 is every other failure.
const exitDamaged = 3

func newStoreCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Check the state database and its backups; restore it from a backup",
		Long: `kvmnet keeps the desired state, its history, the original values of what it
changed (sysctls, an uplink's addresses and routes) and DHCP leases in one
database under the state dir. After every change of the desired state or the
originals it also writes a checksummed backup of both next to it
(backup/backup.json, the two before it as .1 and .2).

A damaged or emptied database stops every command with exit code 3 and this
advice; nothing is changed in the kernel until it is dealt with.`,
	}
	cmd.AddCommand(newStoreCheckCmd(g), newStoreRestoreCmd(g))
	return cmd
}

func newStoreCheckCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Read the whole state database and every backup, and say what is usable",
		Example: `  kvmnet store check
  kvmnet --netns kvl-host store check -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r *store.Report
			// The daemon holds the database: it checks it.
			c := api.NewClient(g.Socket())
			if _, err := os.Stat(g.Socket()); err == nil && c.Ping(cmd.Context()) == nil {
				var err error
				if r, err = c.StoreCheck(cmd.Context()); err != nil {
					return err
				}
			} else {
				r = store.Inspect(g.dbPath(), nil)
			}
			if ok, err := printData(cmd.OutOrStdout(), r, output); ok || err != nil {
				if err == nil && !r.OK() {
					err = damaged{errors.New("the state database is damaged")}
				}
				return err
			}
			printReport(cmd.OutOrStdout(), r)
			if !r.OK() {
				return damaged{fmt.Errorf("the state database %s cannot be used; kvmnet store restore rebuilds it from the newest good backup (stop the daemon first)", r.Database)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

// damaged marks an error that exits with exitDamaged.
type damaged struct{ error }

func (d damaged) Unwrap() error { return d.error }

func printReport(w io.Writer, r *store.Report) {
	state := "ok"
	if !r.OK() {
		state = "DAMAGED: " + r.Problem
	}
	if r.Missing {
		state = "does not exist (no apply yet, or it was deleted)"
	}
	fmt.Fprintf(w, "database  %s\nstate     %s\n", r.Database, state)
	if r.OK() && !r.Missing {
		fmt.Fprintf(w, "revision  %d (%d kept), %d originals\n", r.Revision, r.Revisions, r.Originals)
	}
	if r.BackupProblem != "" {
		fmt.Fprintf(w, "warning   the last backup could not be written: %s\n", r.BackupProblem)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKUP\tSTATE\tREVISION\tWRITTEN\tORIGINALS")
	for _, b := range r.Backups {
		if b.Problem != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\n", b.File, b.Problem)
			continue
		}
		fmt.Fprintf(tw, "%s\tok\t%d\t%s\t%d\n", b.File, b.Revision, b.Time.Format(time.RFC3339), b.Originals)
	}
	tw.Flush()
}

func newStoreRestoreCmd(g *globals) *cobra.Command {
	var from string
	var force bool
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild a damaged or lost state database from the newest good backup",
		Long: `Restore moves the state database aside (as state.db.damaged-TIME) and makes a
new one holding the backup's desired revision, under its number, and the
recorded originals. Leases and events are not in backups: guests ask for
their leases again. The daemon must be stopped; start it again afterwards
and it converges the kernel to the restored revision.

A database that is healthy and holds a desired state is only replaced with
--force.`,
		Example: `  kvmnet store restore
  kvmnet store restore --from /var/lib/kvmnet/backup/backup.json.1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(g.Socket()); err == nil && api.NewClient(g.Socket()).Ping(cmd.Context()) == nil {
				return fmt.Errorf("a daemon is running on %s and holds the state database: stop it, then run kvmnet store restore again", g.Socket())
			}
			path := g.dbPath()
			r := store.Inspect(path, nil)
			if r.OK() && r.Revision > 0 && !force {
				return fmt.Errorf("the state database %s is healthy and holds revision %d; nothing to restore (--force replaces it with the backup anyway)", path, r.Revision)
			}
			var b *store.Backup
			var err error
			if from != "" {
				b, err = store.ReadBackup(from)
			} else {
				b, from, err = store.NewestBackup(path)
			}
			if err != nil {
				return fmt.Errorf("no usable backup: %w", err)
			}
			aside := ""
			if _, err := os.Lstat(path); err == nil {
				aside = fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405Z"))
				if err := os.Rename(path, aside); err != nil {
					return fmt.Errorf("moving %s aside: %w", path, err)
				}
			}
			note := fmt.Sprintf("restored revision %d from %s (written %s)", b.Revision, from, b.Time.Format(time.RFC3339))
			if err := store.Restore(path, b, note); err != nil {
				if aside != "" {
					err = errors.Join(err, os.Rename(aside, path))
				}
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s and %d originals into %s\n", note, len(b.Originals), path)
			if aside != "" {
				fmt.Fprintf(out, "the database it replaces is kept as %s\n", aside)
			}
			fmt.Fprintln(out, "start the daemon again (or run kvmnet plan -f FILE) to see the kernel converge to it")
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "restore from this backup `FILE` instead of the newest good one")
	cmd.Flags().BoolVar(&force, "force", false, "replace a healthy database too")
	return cmd
}
