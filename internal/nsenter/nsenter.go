//go:build linux

// Package nsenter runs Go code and programs inside a named Linux network
// namespace (one under /run/netns, as `ip netns add` makes), and removes
// such a namespace with every process in it. It needs root; it knows
// nothing of tests, so the benchmark in the sallyport binary and the test
// helpers (internal/netns, internal/wanlink) share it.
//
//	err := nsenter.Do("sallyport-123-far", func() error {
//		c, err = net.Dial("tcp", "198.19.2.2:5201") // the socket lives in far
//		return err
//	})
//	cmd := nsenter.Command(ctx, "sallyport-123-far", "iperf3", "-c", "198.19.2.2")
//	err = nsenter.Remove("sallyport-123-far") // its processes killed by pid first
package nsenter

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has joined namespace name, so that the
// sockets (and TUN devices) fn creates belong to it: a socket stays in the
// namespace it was created in, whichever thread uses it later. Do returns
// fn's error. The thread goes back to the caller's namespace before it is
// released; if it cannot, it stays locked and the Go runtime ends it with
// its goroutine.
func Do(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace %s: %w", name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Command returns a command that runs argv in namespace name (through
// `ip netns exec`, which execs argv: the command's pid is argv's own).
func Command(ctx context.Context, name string, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name}, argv...)...)
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Pids lists every process in namespace name.
func Pids(name string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("list processes in namespace %s: %w", name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Remove kills every process in namespace name, by pid, and deletes the
// namespace. The caller's own process is never killed (a goroutine of it
// may be visiting the namespace through Do).
func Remove(name string) error {
	killErr := KillAll(name)
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("remove namespace %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	if killErr != nil {
		return fmt.Errorf("remove namespace %s: %w", name, killErr)
	}
	return nil
}

// KillAll sends SIGKILL to every process in namespace name, by pid, but
// the caller's own, and waits up to 5s for them to be gone.
func KillAll(name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := Pids(name)
		pids = slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() })
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in namespace %s after SIGKILL", pids, name)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RemoveStale removes the namespaces that an earlier run left behind
// because it was killed before its cleanup ran: those named prefix, then
// the creating process's pid, then "-" and anything, whose process no
// longer exists. It reports each one it removes, and each failure, to logf.
func RemoveStale(prefix string, logf func(format string, args ...any)) error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("list network namespaces: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		pidText, _, _ := strings.Cut(strings.TrimPrefix(f[0], prefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		logf("removing namespace %s left by an earlier run (pid %d is gone)", f[0], pid)
		if err := Remove(f[0]); err != nil {
			logf("%v", err)
		}
	}
	return nil
}

// Dial opens a connection from namespace name, as a program there would.
func Dial(ctx context.Context, name, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(name, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener in namespace name.
func Listen(name, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(name, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
