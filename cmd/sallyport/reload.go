package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/spf13/cobra"
)

// notifyHangup starts taking SIGHUP, the reload signal, on the returned
// channel (its default action would end the process); signal.Stop ends it.
func notifyHangup() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// withHangups returns run with reload called for each SIGHUP on hup
// while run runs, one at a time, in a goroutine it starts and waits for.
func withHangups(hup <-chan os.Signal, run func(context.Context) error, reload func(context.Context)) func(context.Context) error {
	return func(ctx context.Context) error {
		done := make(chan struct{})
		var loop sync.WaitGroup
		loop.Go(func() {
			for {
				select {
				case <-hup:
					reload(ctx)
				case <-done:
					return
				}
			}
		})
		defer func() {
			close(done)
			loop.Wait()
		}()
		return run(ctx)
	}
}

func newReloadCmd() *cobra.Command {
	cmd := adminCmd("reload", "Make a running edge read its config again (as SIGHUP does) and print what changed", cobra.NoArgs,
		func(cmd *cobra.Command, c *admin.Client, _ []string) (any, error) { return c.Reload(cmd.Context()) },
		func(w io.Writer, v any) { printReload(w, v.(admin.ReloadResult)) })
	cmd.Long = `Make a running edge read its config file (and its flags) again, as SIGHUP does.
Services, their policies and the shared listeners change as one step; live
connections on what stays are untouched, and a removed listener lets its
connections finish for up to drain_timeout. A config with any problem is
refused as a whole (exit status 1, every problem printed as file:line: key)
and the running one stays. Settings only a restart changes are listed.

A connector reloads on SIGHUP only: kill -HUP its process (systemd:
ExecReload=/bin/kill -HUP $MAINPID).`
	return cmd
}

// printReload prints what a reload changed, one line each.
func printReload(w io.Writer, r admin.ReloadResult) {
	if !r.Changed {
		fmt.Fprintln(w, "reloaded: nothing changed")
	} else {
		fmt.Fprintln(w, "reloaded")
	}
	for _, l := range []struct {
		what  string
		names []string
	}{
		{"services added", r.ServicesAdded}, {"services removed", r.ServicesRemoved}, {"services changed", r.ServicesChanged},
		{"listeners added", r.ListenersAdded}, {"listeners removed (draining)", r.ListenersRemoved},
	} {
		if len(l.names) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	for _, p := range r.RestartNeeded {
		fmt.Fprintf(w, "  needs a restart: %s\n", p)
	}
}
