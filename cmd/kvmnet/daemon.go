package main

import (
	"context"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmnet/kvmnet/internal/daemon"
	"github.com/kvmnet/kvmnet/internal/metrics"
)

func newDaemonCmd(g *globals) *cobra.Command {
	var resync time.Duration
	var upstreams []string
	var metricsAddr, socketGroup, apiAddr, tlsCert, tlsKey, tlsCA string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Serve DHCP and DNS, adopt late taps, keep the kernel matching, serve the API",
		Long: `The daemon applies the stored desired state at start (nothing changes when
the kernel already matches), serves DHCP and DNS on every NAT network's
bridge, adopts configured taps as soon as they appear, re-applies the desired
state every --resync, and answers the CLI on its unix socket. Stopping it
leaves the kernel as it is.`,
		Example: `  kvmnet daemon
  kvmnet --netns kvl-host daemon &`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			eng, host, err := g.openEngine()
			if err != nil {
				return err
			}
			defer host.Close()
			defer eng.Store.Close()
			defer eng.Wait()
			// Read the whole database once: damage found now is a
			// message; found mid-converge it would stop a repair.
			if err := eng.Store.Verify(); err != nil {
				return err
			}
			eng.KeepInBackground = true
			eng.Store.BackupInBackground = true
			go host.PrepareNft()
			return daemon.Run(ctx, daemon.Options{
				Engine: eng, Socket: g.Socket(), Resync: resync, Upstreams: upstreams, Log: g.log,
				MetricsAddr: metricsAddr, SocketGroup: socketGroup, Events: host,
				APIAddr: apiAddr, TLSCert: tlsCert, TLSKey: tlsKey, TLSClientCA: tlsCA,
				RuleDrops: func(ctx context.Context) (map[string]uint64, error) {
					out, err := host.NFT.ListJSON(ctx)
					if err != nil || out == "" {
						return map[string]uint64{}, err
					}
					return metrics.ParseDropCounters([]byte(out))
				},
				PortSecurityDrops: func(context.Context) (map[string]map[string]uint64, error) {
					return host.DropCounters()
				},
			})
		},
	}
	cmd.Flags().DurationVar(&resync, "resync", 30*time.Second, "period of the safety pass that re-applies the desired state")
	cmd.Flags().StringVar(&apiAddr, "api-addr", "", "also serve the API on TCP `ADDR`, mutual TLS only (needs --tls-cert, --tls-key, --tls-client-ca)")
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "PEM certificate of the TCP API")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "PEM key of the TCP API")
	cmd.Flags().StringVar(&tlsCA, "tls-client-ca", "", "PEM CA whose client certificates the TCP API accepts")
	cmd.Flags().StringVar(&socketGroup, "socket-group", "", "let members of `GROUP` use the API socket (default: root only)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on `ADDR` (e.g. 127.0.0.1:9477); off when empty")
	cmd.Flags().StringSliceVar(&upstreams, "upstream", nil, "DNS upstream `ADDR` (repeatable; default: nameservers of /etc/resolv.conf)")
	return cmd
}
