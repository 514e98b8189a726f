package main

import "github.com/spf13/cobra"

// newLabCmd is replaced by the lab implementation.
func newLabCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "lab", Short: "namespace worlds", Annotations: map[string]string{"netns": "host"}}
}
