package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/store"
)

func newHistoryCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "history",
		Short:   "List the stored revisions of the desired state",
		Example: "  kvmnet history\n  kvmnet rollback 3",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			revs, err := b.Revisions(cmd.Context())
			if err != nil {
				return err
			}
			if revs == nil {
				revs = []store.Revision{}
			}
			w := cmd.OutOrStdout()
			if done, err := printData(w, revs, output); done {
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			defer tw.Flush()
			fmt.Fprintln(tw, "REV\tTIME\tSIZE\tFROM")
			for _, r := range revs {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\n", r.Rev, r.Time.UTC().Format(time.RFC3339), r.Size, dash(r.Note))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func newRollbackCmd(g *globals) *cobra.Command {
	var opt engine.ApplyOptions
	cmd := &cobra.Command{
		Use:     "rollback REV",
		Short:   "Apply a stored revision of the desired state again",
		Long:    "Rollback applies revision REV (see kvmnet history) like apply -f would; it becomes the newest revision.",
		Example: "  kvmnet rollback 3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("revision %q: want a number from kvmnet history", args[0])
			}
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			doc, err := b.Revision(cmd.Context(), rev)
			if err != nil {
				return err
			}
			r, err := b.Apply(cmd.Context(), fmt.Sprintf("rollback to revision %d", rev), doc, opt)
			if err != nil {
				return err
			}
			printApplied(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&opt.AllowRemoval, "allow-removal", false, "let the rollback remove networks, or more than half of the links kvmnet manages")
	return cmd
}

func newEventsCmd(g *globals) *cobra.Command {
	var output string
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show what kvmnet changed and why: applies, destroys, repaired drift",
		Example: `  kvmnet events
  kvmnet events -f          # keep printing new events`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.openBackend(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			w := cmd.OutOrStdout()
			var since uint64
			for {
				evs, err := b.Events(cmd.Context(), since)
				if err != nil {
					return err
				}
				if evs == nil {
					evs = []store.Event{}
				}
				if !follow {
					if done, err := printData(w, evs, output); done {
						return err
					}
				}
				for _, e := range evs {
					fmt.Fprintf(w, "%s  %-7s %s  %s\n", e.Time.UTC().Format(time.RFC3339), e.Kind, e.Message, dash(strings.TrimSpace(e.Object)))
					since = e.Seq
				}
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml (not with -f)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events (needs the daemon, or polls the state database)")
	return cmd
}
