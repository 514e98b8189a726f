package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/engine"
	"github.com/kvmnet/kvmnet/internal/model"
)

// forwardArgs names the flag behind each key of a forward, for messages
// about an edit's arguments (model.Edit).
var forwardArgs = map[string]string{
	"network": "--network", "proto": "--proto", "port": "--port", "to": "--to",
	"from": "--from", "listen": "--listen", "rateLimit": "--rate-limit", "force": "--force",
}

// Edits name themselves in messages and in `kvmnet history`.
const (
	forwardAddEdit = "kvmnet forward add"
	forwardRmEdit  = "kvmnet forward rm"
)

// forwardEditor edits forwards of the desired state in place: the daemon
// (api.Client) or the local engine. Both check the edit against the
// desired state they hold parsed and apply the result; neither sends,
// parses or checks the whole file again.
type forwardEditor interface {
	AddForward(ctx context.Context, req api.ForwardRequest) (*api.PlanResult, error)
	RemoveForward(ctx context.Context, req api.ForwardRequest) (*api.PlanResult, error)
}

var (
	_ forwardEditor = remote{}
	_ forwardEditor = (*local)(nil)
)

// AddForward implements forwardEditor.
func (l *local) AddForward(ctx context.Context, req api.ForwardRequest) (*api.PlanResult, error) {
	p, _, err := l.eng.AddForward(ctx, req.Network, req.Forward(), req.ModelEdit(forwardAddEdit))
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

// RemoveForward implements forwardEditor.
func (l *local) RemoveForward(ctx context.Context, req api.ForwardRequest) (*api.PlanResult, error) {
	p, _, err := l.eng.RemoveForward(ctx, req.Network, req.Port, req.Proto, req.ModelEdit(forwardRmEdit))
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

// editForward runs an edit of forwards through the daemon or the local
// engine. A daemon older than this command has no route for it: the edit
// then goes the long way, as a whole file (editDesired).
func (g *globals) editForward(ctx context.Context, out io.Writer, req api.ForwardRequest,
	fast func(forwardEditor, context.Context, api.ForwardRequest) (*api.PlanResult, error), slow func(*model.Config) error) error {
	return editInPlace(g, ctx, out, req, req.Edit, fast, slow)
}

// editInPlace runs an edit the daemon and the local engine make in place
// (an editor E: forwardEditor, interfaceEditor) with fast; a daemon older
// than this command has no route for it, and gets the whole file as slow
// edits it (editDesired), named edit.
func editInPlace[E, R any](g *globals, ctx context.Context, out io.Writer, req R, edit string,
	fast func(E, context.Context, R) (*api.PlanResult, error), slow func(*model.Config) error) error {
	b, err := g.openBackend(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	if e, ok := b.(E); ok {
		r, err := fast(e, ctx, req)
		if !errors.Is(err, api.ErrNoForwardRoute) {
			if err != nil {
				return err
			}
			printApplied(out, r)
			return nil
		}
		g.log.Warn("the daemon is older than this command; sending it the whole edited file", "socket", g.Socket())
	}
	return g.editDesired(ctx, b, out, edit, slow)
}

func newForwardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "forward add|rm|ls",
		Short: "Add, remove and list port forwards into NAT networks",
		Long: `Port forwards change the stored desired state and apply it at once: the
forward lands as elements of the dnat4 map, never as new rules. A file
given to "kvmnet apply -f" later replaces the desired state whole
("kvmnet export" prints the current one). Removing a forward also cuts the
connections that go through it.`,
	}
	cmd.AddCommand(newForwardAddCmd(g), newForwardRmCmd(g), newForwardLsCmd(g))
	return cmd
}

// editDesired loads the desired state from b, lets edit change it, and
// applies the result as a file named source. The edited config is parsed
// again, so every check of a file applies to an edit too; with thousands
// of forwards that takes most of a second, which editForward saves.
func (g *globals) editDesired(ctx context.Context, b backend, out io.Writer, source string, edit func(*model.Config) error) error {
	file, doc, err := b.Desired(ctx)
	if err != nil {
		return err
	}
	if file == "" {
		file = "desired state"
	}
	cfg, err := model.ParseStored(file, doc)
	if err != nil {
		return fmt.Errorf("the stored desired state does not parse: %w", err)
	}
	if err := edit(cfg); err != nil {
		return err
	}
	newDoc, err := model.Marshal(cfg)
	if err != nil {
		return err
	}
	r, err := b.Apply(ctx, source, newDoc, engine.ApplyOptions{})
	if err != nil {
		return err
	}
	printApplied(out, r)
	return nil
}

func findNetwork(cfg *model.Config, name string) (*model.Network, error) {
	if n := cfg.Network(name); n != nil {
		return n, nil
	}
	var names []string
	for _, n := range cfg.Networks {
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("--network %q: no such network in the desired state (networks: %s)", name, strings.Join(names, ", "))
}

func newForwardAddCmd(g *globals) *cobra.Command {
	var f model.Forward
	var network string
	cmd := &cobra.Command{
		Use: "add --network NET --port PORT --to VM[:PORT]",
		// Served by a daemon when one runs, which needs no --netns.
		Annotations: map[string]string{"netns": "daemon"},
		Short:       "Forward a port of the host into a NAT network",
		Example: `  kvmnet forward add --network dev --port 8080 --to web1:80
  kvmnet forward add --network dev --proto udp --port 5000-5010 --to web1 --from 203.0.113.0/24
  kvmnet forward add --network dev --port 2222 --to 192.168.100.10:22 --rate-limit 10/second`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if network == "" || f.Port == "" || f.To == "" {
				return fmt.Errorf("--network, --port and --to are required")
			}
			req := api.ForwardRequest{Network: network, Proto: f.Proto, Port: f.Port, To: f.To, From: f.From,
				Listen: f.Listen, RateLimit: f.RateLimit, Force: f.Force, EditNames: api.EditNames{Edit: forwardAddEdit, Args: forwardArgs}}
			return g.editForward(cmd.Context(), cmd.OutOrStdout(), req, forwardEditor.AddForward, func(cfg *model.Config) error {
				n, err := findNetwork(cfg, network)
				if err != nil {
					return err
				}
				n.Forwards = append(n.Forwards, f)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&network, "network", "", "the NAT network to forward into")
	fl.StringVar(&f.Proto, "proto", "tcp", "tcp or udp")
	fl.StringVar(&f.Port, "port", "", "port or range (5000-5010) of the host")
	fl.StringVar(&f.To, "to", "", "VM[:PORT] or IP[:PORT] inside the network")
	fl.StringSliceVar(&f.From, "from", nil, "allowed source `CIDR` (repeatable; default everyone)")
	fl.StringVar(&f.Listen, "listen", "", "host address to listen on (default: the egress interface's addresses)")
	fl.StringVar(&f.RateLimit, "rate-limit", "", "new connections per source, e.g. 50/second")
	fl.BoolVar(&f.Force, "force", false, "forward a port the host itself listens on")
	return cmd
}

func newForwardRmCmd(g *globals) *cobra.Command {
	var network, port, proto string
	cmd := &cobra.Command{
		Use: "rm --network NET --port PORT [--proto tcp]",
		// Served by a daemon when one runs, which needs no --netns.
		Annotations: map[string]string{"netns": "daemon"},
		Short:       "Remove a port forward and cut its connections",
		Example:     "  kvmnet forward rm --network dev --port 8080\n  kvmnet forward rm --network dev --port 5000-5010 --proto udp",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if network == "" || port == "" {
				return fmt.Errorf("--network and --port are required")
			}
			req := api.ForwardRequest{Network: network, Port: port, Proto: proto, EditNames: api.EditNames{Edit: forwardRmEdit, Args: forwardArgs}}
			return g.editForward(cmd.Context(), cmd.OutOrStdout(), req, forwardEditor.RemoveForward, func(cfg *model.Config) error {
				n, err := findNetwork(cfg, network)
				if err != nil {
					return err
				}
				var keep []model.Forward
				var have []string
				for _, f := range n.Forwards {
					have = append(have, f.Port+"/"+f.Proto)
					if f.Port == port && f.Proto == proto {
						continue
					}
					keep = append(keep, f)
				}
				if len(keep) == len(n.Forwards) {
					return fmt.Errorf("network %q has no forward of port %s/%s (it has: %s)", network, port, proto, strings.Join(have, ", "))
				}
				n.Forwards = keep
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&network, "network", "", "the NAT network")
	cmd.Flags().StringVar(&port, "port", "", "the port or range, as added")
	cmd.Flags().StringVar(&proto, "proto", "tcp", "tcp or udp")
	return cmd
}

// forwardRow is one line of `kvmnet forward ls`.
type forwardRow struct {
	Network   string   `json:"network"`
	Proto     string   `json:"proto"`
	Port      string   `json:"port"`
	To        string   `json:"to"`
	From      []string `json:"from,omitempty"`
	Listen    string   `json:"listen,omitempty"`
	RateLimit string   `json:"rateLimit,omitempty"`
}

func newForwardLsCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: "ls",
		// Served by a daemon when one runs, which needs no --netns.
		Annotations: map[string]string{"netns": "daemon"},
		Short:       "List the port forwards of the desired state",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadDesired(cmd.Context())
			if err != nil {
				return err
			}
			rows := []forwardRow{}
			for _, n := range cfg.Networks {
				for _, f := range n.Forwards {
					rows = append(rows, forwardRow{n.Name, f.Proto, f.Port, f.To, f.From, f.Listen, f.RateLimit})
				}
			}
			w := cmd.OutOrStdout()
			if done, err := printData(w, rows, output); done {
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			defer tw.Flush()
			fmt.Fprintln(tw, "NETWORK\tPROTO\tPORT\tTO\tFROM\tLISTEN\tRATE")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Network, r.Proto, r.Port, r.To,
					dash(strings.Join(r.From, ",")), dash(r.Listen), dash(r.RateLimit))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

// loadDesired reads and parses the stored desired state, through the daemon
// when it runs.
func (g *globals) loadDesired(ctx context.Context) (*model.Config, error) {
	b, err := g.openBackend(ctx)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	file, doc, err := b.Desired(ctx)
	if err != nil {
		return nil, err
	}
	return model.ParseStored(file, doc)
}

func newExportCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "export",
		Short:   "Print the stored desired state as a file apply -f accepts",
		Example: "  kvmnet export > host.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadDesired(cmd.Context())
			if err != nil {
				return err
			}
			out, err := model.Marshal(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}
