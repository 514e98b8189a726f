package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/api"
	"github.com/kvmnet/kvmnet/internal/model"
)

// vmArgs names the argument behind each key of an interface, for messages
// about an edit's arguments (model.Edit).
var vmArgs = map[string]string{
	"vm": "VM", "network": "--network", "mac": "--mac", "ip": "--ip", "tap": "--tap",
	"createTap": "--create-tap", "queues": "--queues", "owner": "--owner",
}

// Edits name themselves in messages and in `kvmnet history`.
const (
	vmAttachEdit = "kvmnet vm attach"
	vmDetachEdit = "kvmnet vm detach"
)

// interfaceEditor attaches and detaches VM interfaces in place: the daemon
// (api.Client) or the local engine, as forwardEditor edits forwards.
type interfaceEditor interface {
	AttachInterface(ctx context.Context, req api.InterfaceRequest) (*api.PlanResult, error)
	DetachInterface(ctx context.Context, req api.InterfaceRequest) (*api.PlanResult, error)
}

var (
	_ interfaceEditor = remote{}
	_ interfaceEditor = (*local)(nil)
)

// AttachInterface implements interfaceEditor.
func (l *local) AttachInterface(ctx context.Context, req api.InterfaceRequest) (*api.PlanResult, error) {
	p, _, err := l.eng.AttachInterface(ctx, req.Attach(), req.ModelEdit(vmAttachEdit))
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

// DetachInterface implements interfaceEditor.
func (l *local) DetachInterface(ctx context.Context, req api.InterfaceRequest) (*api.PlanResult, error) {
	p, _, err := l.eng.DetachInterface(ctx, req.VM, req.Tap, req.ModelEdit(vmDetachEdit))
	if err != nil {
		return nil, err
	}
	return api.Result(p), nil
}

// editInterface runs an attach or detach through the daemon or the local
// engine (see editInPlace); slow makes the edit on a whole file.
func (g *globals) editInterface(ctx context.Context, out io.Writer, req api.InterfaceRequest,
	fast func(interfaceEditor, context.Context, api.InterfaceRequest) (*api.PlanResult, error),
	slow func(*model.Config, model.Edit) (*model.Config, error)) error {
	return editInPlace(g, ctx, out, req, req.Edit, fast, func(cfg *model.Config) error {
		next, err := slow(cfg, req.ModelEdit(req.Edit))
		if err != nil {
			return err
		}
		*cfg = *next
		return nil
	})
}

func newVMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm attach|detach",
		Short: "Attach and detach VM interfaces, as a libvirt hook or an orchestrator would",
		Long: `An attach or a detach changes the stored desired state and applies it at
once, checked as the same interface in a file would be; a refused edit
changes nothing. A file given to "kvmnet apply -f" later replaces the
desired state whole ("kvmnet export" prints the current one).`,
	}
	cmd.AddCommand(newVMAttachCmd(g), newVMDetachCmd(g))
	return cmd
}

func newVMAttachCmd(g *globals) *cobra.Command {
	req := api.InterfaceRequest{EditNames: api.EditNames{Edit: vmAttachEdit, Args: vmArgs}}
	cmd := &cobra.Command{
		Use: "attach VM --network NET --mac MAC [--ip IP] [--tap TAP]",
		// Served by a daemon when one runs, which needs no --netns.
		Annotations: map[string]string{"netns": "daemon"},
		Short:       "Attach an interface to a VM (a new VM when the name is new)",
		Example: `  kvmnet vm attach web2 --network dev --mac 52:54:00:00:00:12 --ip 192.168.100.12
  kvmnet vm attach web2 --network lan --mac 52:54:00:00:01:12 --tap vnet7
  kvmnet vm attach web3 --network dev --mac 52:54:00:00:00:13 --create-tap --queues 4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.VM = args[0]
			return g.editInterface(cmd.Context(), cmd.OutOrStdout(), req, interfaceEditor.AttachInterface,
				func(c *model.Config, ed model.Edit) (*model.Config, error) { return c.WithInterface(req.Attach(), ed) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Network, "network", "", "the network the interface sits on")
	fl.StringVar(&req.MAC, "mac", "", "the MAC of the guest's NIC, e.g. 52:54:00:12:34:56")
	fl.StringVar(&req.IP, "ip", "", "a reserved address on a NAT network (DHCP reservation and source binding)")
	fl.StringVar(&req.Tap, "tap", "", "the host-side tap (default: VM-INDEX, e.g. web2-0)")
	fl.BoolVar(&req.CreateTap, "create-tap", false, "kvmnet creates the tap (otherwise it adopts the tap libvirt or qemu makes)")
	fl.IntVar(&req.Queues, "queues", 0, "queues of a tap kvmnet creates (>1: multi-queue)")
	fl.StringVar(&req.Owner, "owner", "", "user allowed to open a tap kvmnet creates")
	return cmd
}

func newVMDetachCmd(g *globals) *cobra.Command {
	req := api.InterfaceRequest{EditNames: api.EditNames{Edit: vmDetachEdit, Args: vmArgs}}
	cmd := &cobra.Command{
		Use: "detach VM [--tap TAP]",
		// Served by a daemon when one runs, which needs no --netns.
		Annotations: map[string]string{"netns": "daemon"},
		Short:       "Detach a VM's interface (all of them without --tap)",
		Example:     "  kvmnet vm detach web2 --tap vnet7\n  kvmnet vm detach web2",
		Args:        cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.VM = args[0]
			if req.VM == "" {
				return fmt.Errorf("name the VM to detach")
			}
			return g.editInterface(cmd.Context(), cmd.OutOrStdout(), req, interfaceEditor.DetachInterface,
				func(c *model.Config, ed model.Edit) (*model.Config, error) {
					return c.WithoutInterface(req.VM, req.Tap, ed)
				})
		},
	}
	cmd.Flags().StringVar(&req.Tap, "tap", "", "the tap of the interface to detach (default: every interface of the VM)")
	return cmd
}
