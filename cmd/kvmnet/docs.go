package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newDocsCmd is the hidden `kvmnet docs`: documentation generated from the
// commands themselves, for packaging (`make man`, `make deb`). It is hidden
// because users read its output, not run it.
func newDocsCmd(g *globals) *cobra.Command {
	docs := &cobra.Command{
		Use:    "docs",
		Short:  "Generate documentation from the commands",
		Hidden: true,
		Args:   cobra.NoArgs,
		// Writes files only: no namespace to enter, nothing to log.
		Annotations: map[string]string{"netns": "host"},
	}
	docs.AddCommand(newDocsManCmd(g))
	return docs
}

func newDocsManCmd(_ *globals) *cobra.Command {
	var section, source string
	cmd := &cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page for every command into DIR (kvmnet.8, kvmnet-apply.8, ...)",
		Long: `Writes one roff man page per command, named after the command path
(kvmnet-get.8 for "kvmnet get"), into DIR, creating it. The date in the
pages is SOURCE_DATE_EPOCH when set, so packages build reproducibly.`,
		Example: `  kvmnet docs man bin/man
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) kvmnet docs man --source "kvmnet 0.1.0" /tmp/man`,
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{"netns": "host"},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("creating man page directory: %w", err)
			}
			root := cmd.Root()
			// The "Auto generated" history section carries the build
			// date; the header's date is enough.
			disableAutoGenTag(root)
			header := &doc.GenManHeader{Section: section, Source: source, Manual: "kvmnet manual"}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("writing man pages to %q: %w", dir, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&section, "section", "8", "manual `SECTION` (8, system administration: kvmnet is installed in /usr/sbin)")
	cmd.Flags().StringVar(&source, "source", "kvmnet", "`TEXT` for the footer's source field, e.g. \"kvmnet 0.1.0\"")
	return cmd
}

func disableAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		disableAutoGenTag(sub)
	}
}
