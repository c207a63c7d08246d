//go:build linux

package wanlink

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/netns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// missing says why the link tests cannot run here ("" when they can):
// they need root, iproute2, a TUN device, ping and iperf3.
func missing() string {
	why := netns.Missing("tc", "ping", "iperf3")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		why = strings.TrimPrefix(why+"; no /dev/net/tun (a kernel with CONFIG_TUN)", "; ")
	}
	return why
}

// startLink starts a link for t that t's cleanup closes, or skips t
// loudly (fails it under CI=true) when the machine cannot.
func startLink(t *testing.T, spec string) *Link {
	t.Helper()
	netns.SkipIfMissing(t, missing())
	if err := RemoveStale(t.Logf); err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close the link: %v", err)
		}
	})
	return l
}

// must runs argv on h within 30s and fails t if it fails.
func must(t *testing.T, h *Host, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingRTTs pings site from far count times, every interval, and returns
// the round-trip times of the replies, sorted, in milliseconds.
func pingRTTs(t *testing.T, l *Link, count int, interval string) []float64 {
	t.Helper()
	out := must(t, l.Far, "ping", "-n", "-c", strconv.Itoa(count), "-i", interval, "-W", "2", SiteAddr)
	var rtts []float64
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v)
	}
	slices.Sort(rtts)
	return rtts
}

// The link holds every packet for the configured time: ping's round trip
// is never shorter, and mostly no more than a few milliseconds longer
// (the tolerance leaves room for a busy two-core machine).
func TestRoundTripTime(t *testing.T) {
	l := startLink(t, "50ms")
	rtts := pingRTTs(t, l, 40, "0.02")
	if len(rtts) != 40 {
		t.Fatalf("%d of 40 pings answered on a link without loss", len(rtts))
	}
	lo, median, hi := rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1]
	t.Logf("ping through a 50ms link: min %.2f, median %.2f, max %.2f ms", lo, median, hi)
	if lo < 50 {
		t.Errorf("a round trip took %.2f ms, less than the link's 50 ms", lo)
	}
	if median > 60 {
		t.Errorf("median round trip %.2f ms, want 50-60 ms", median)
	}
}

// iperf3Server runs an iperf3 server on site until t ends, and waits
// until it listens.
func iperf3Server(t *testing.T, l *Link) {
	t.Helper()
	cmd := l.Site.Command(context.Background(), "iperf3", "-s", "-B", SiteAddr)
	p, err := childproc.Start(cmd)
	if err != nil {
		t.Fatalf("start iperf3 -s: %v", err)
	}
	t.Cleanup(p.Kill)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if out := must(t, l.Site, "ss", "-Hltn", "sport = :5201"); strings.TrimSpace(out) != "" {
			return
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("iperf3 -s does not listen on site: %s", p.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// iperf3Result is the part of iperf3 -J's report the tests read.
type iperf3Result struct {
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// iperf3 runs an iperf3 client on far against site's server with args
// added (such as -t 3, -R, -P 8).
func iperf3(t *testing.T, l *Link, args ...string) iperf3Result {
	t.Helper()
	out := must(t, l.Far, append([]string{"iperf3", "-c", SiteAddr, "-J"}, args...)...)
	var r iperf3Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("iperf3's report: %v\n%s", err, out)
	}
	return r
}

// A TCP transfer through the link reaches its rate, each way, and no more.
// The rate is modest, so that a busy two-core machine does not decide it.
func TestRate(t *testing.T) {
	l := startLink(t, "20ms,200mbit")
	iperf3Server(t, l)
	for _, dir := range []struct {
		name string
		args []string
	}{
		{"far to site", []string{"-t", "2", "-O", "1"}},
		{"site to far", []string{"-t", "2", "-O", "1", "-R"}},
	} {
		r := iperf3(t, l, dir.args...)
		got := r.End.SumReceived.BitsPerSecond
		t.Logf("%s: %.1f Mbit/s through a 200 Mbit/s link at 20 ms (%d retransmits)", dir.name, got/1e6, r.End.SumSent.Retransmits)
		if got < 160e6 || got > 210e6 {
			t.Errorf("%s: %.1f Mbit/s, want 160-210 (80-105%% of the rate)", dir.name, got/1e6)
		}
	}
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// The link drops the configured fraction of packets in each direction:
// a ping, which crosses it twice, is lost 1-(1-p)² of the time.
func TestLoss(t *testing.T) {
	l := startLink(t, "10ms,10%")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const count = 1000
	// -l 20: up to 20 pings in flight, or ping slows to one a round trip
	// once some are lost.
	out, err := l.Far.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.004", "-l", "20", "-W", "1", SiteAddr)
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary from ping: %v\n%s", err, out)
	}
	sent, _ := strconv.Atoi(m[1])
	received, _ := strconv.Atoi(m[2])
	loss := 1 - float64(received)/float64(sent)
	toSite, toFar := l.Stats()
	t.Logf("10%% each way: %d of %d pings lost (%.1f%%); the link dropped %d requests and %d replies",
		sent-received, sent, loss*100, toSite.Lost, toFar.Lost)
	// 19% expected, with a standard deviation of 1.2% over 1,000 pings;
	// a link that dropped in one direction only would lose 10%.
	if sent != count || loss < 0.14 || loss > 0.24 {
		t.Errorf("%.1f%% of %d pings lost, want 14-24%% (19%% expected)", loss*100, sent)
	}
	// About 100 of 1,000 requests and 90 of 900 replies, deviations ~9.
	if toSite.Lost < 60 || toSite.Lost > 140 || toFar.Lost < 50 || toFar.Lost > 130 {
		t.Errorf("the link dropped %d requests and %d replies, want about 100 and 90", toSite.Lost, toFar.Lost)
	}
}

// Bytes cross a lossy link intact: the super-packets that the loss cuts
// into pieces carry valid checksums, and TCP recovers what was lost.
func TestIntactThroughLoss(t *testing.T) {
	l := startLink(t, "20ms,2%,200mbit")
	ln, err := l.Site.Listen("tcp", SiteAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, 8<<20)
	rand.Read(data)
	sent := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		_, err = c.Write(data)
		sent <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := l.Far.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("received %d of %d bytes: %v", n, len(data), err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the bytes changed on the way")
	}
	_, toFar := l.Stats()
	t.Logf("site to far: %+v", toFar)
	if toFar.Cut == 0 || toFar.Errors != 0 {
		t.Errorf("site to far: %+v: want super-packets cut by the loss, and no errors", toFar)
	}
	if bad := csumErrors(t, l.Far); bad != 0 {
		t.Errorf("far's TCP saw %d segments with a bad checksum", bad)
	}
}

// csumErrors is the host's count of TCP segments received with a bad
// checksum (InCsumErrors in /proc/net/snmp).
func csumErrors(t *testing.T, h *Host) int {
	t.Helper()
	var snmp []byte
	err := h.Do(func() error {
		var err error
		snmp, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(string(snmp)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "InCsumErrors"); i > 0 && i < len(f) {
			n, _ := strconv.Atoi(f[i])
			return n
		}
	}
	t.Fatalf("no Tcp InCsumErrors in /proc/net/snmp:\n%s", snmp)
	return 0
}

// ourNamespaces lists the namespaces this test process has made.
func ourNamespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], NamePrefix+strconv.Itoa(os.Getpid())+"-") {
			names = append(names, f[0])
		}
	}
	return names
}

// Close removes the namespaces, and the processes left in them.
func TestCloseRemovesEverything(t *testing.T) {
	netns.SkipIfMissing(t, missing())
	l, err := Start(Spec{RTT: 10 * time.Millisecond, Rate: 100e6})
	if err != nil {
		t.Fatal(err)
	}
	if got := ourNamespaces(t); len(got) != 3 {
		t.Errorf("namespaces %v, want far, router and site", got)
	}
	p, err := childproc.Start(l.Site.Command(context.Background(), "sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(5 * time.Second); err == nil || p.ExitCode() != -1 {
		t.Errorf("a process left on site: %s after Close, want killed", p.State())
	}
	if got := ourNamespaces(t); len(got) != 0 {
		t.Errorf("namespaces %v left after Close", got)
	}
}

// A Start that fails half-way removes what it made: here tc is missing,
// so the rate cannot be set after the namespaces, veths and TUN devices
// are made.
func TestStartFailureRemovesEverything(t *testing.T) {
	netns.SkipIfMissing(t, missing())
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(ip, filepath.Join(bin, "ip")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	l, err := Start(Spec{RTT: 10 * time.Millisecond, Rate: 100e6})
	if err == nil {
		l.Close()
		t.Fatal("Start succeeded without tc")
	}
	if !strings.Contains(err.Error(), "tc qdisc add") {
		t.Errorf("Start: %v; want the failing tc command named", err)
	}
	if got := ourNamespaces(t); len(got) != 0 {
		t.Errorf("namespaces %v left after a failed Start", got)
	}
}
