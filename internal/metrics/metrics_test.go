package metrics

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sallyport/sallyport/internal/store"
)

// Every call of store.Store is timed: timedStore defines each method
// itself (an embedded one would pass through uncounted), but Close.
func TestTimedStoreCoversTheInterface(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "store.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]bool{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil {
			continue
		}
		if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok && star.X.(*ast.Ident).Name == "timedStore" {
			own[fn.Name.Name] = true
		}
	}
	it := reflect.TypeFor[store.Store]()
	for i := range it.NumMethod() {
		name := it.Method(i).Name
		if name != "Close" && !own[name] {
			t.Errorf("timedStore does not time store.Store's %s", name)
		}
	}
	if len(own) < 20 {
		t.Fatalf("found %d timedStore methods: the parse is not seeing them", len(own))
	}
}

// Two edges in one process keep apart: each has its own registry.
func TestEdgesHaveTheirOwnRegistries(t *testing.T) {
	a, b := NewEdge([]string{"db"}, func() bool { return false }, noCluster), NewEdge([]string{"db"}, func() bool { return true }, noCluster)
	a.Admitted("db", "tcp")
	a.Service("db").ToBackend.Add(7)
	if got := testutil.ToFloat64(a.admitted.WithLabelValues("db", "tcp")); got != 1 {
		t.Fatalf("a admitted %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.admitted.WithLabelValues("db", "tcp")); got != 0 {
		t.Fatalf("b admitted %v, want 0: the edges share a registry", got)
	}
	if n, err := testutil.GatherAndCount(b.Registry(), "sallyport_edge_fenced"); err != nil || n != 1 {
		t.Fatalf("b's fenced gauge: %d series, %v", n, err)
	}
}

// A name from outside is never a label of its own.
func TestUnknownServicesShareOneLabel(t *testing.T) {
	m := NewEdge([]string{"db"}, func() bool { return false }, noCluster)
	for _, s := range []string{"evil", "DB", "db ", "../db", strings.Repeat("x", 1000)} {
		m.Refused(s, "socks5", "unknown_service")
		m.Admitted(s, "tcp")
		if m.Service(s) != m.Service("") {
			t.Errorf("service %q has relay counters of its own", s)
		}
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("", "socks5", "unknown_service")); got != 5 {
		t.Fatalf("refusals of unknown names under service \"\": %v, want 5", got)
	}
	if n := testutil.CollectAndCount(m.refused); n != 1 {
		t.Fatalf("%d refusal series, want 1", n)
	}
}

// Dial errors are sorted by kind, from real dials where they can be.
func TestDialReason(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, refused := net.Dial("tcp", addr)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, timeout := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	for _, tt := range []struct {
		err  error
		want string
	}{
		{refused, "refused"},
		{timeout, "timeout"},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "db.internal", IsNotFound: true}}, "dns"},
		{errors.New("something else"), "other"},
	} {
		if got := dialReason(tt.err); got != tt.want {
			t.Errorf("dialReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestCodeLabel(t *testing.T) {
	for in, want := range map[string]string{"": "ok", "token unknown": "token_unknown", "back-end unreachable": "back_end_unreachable", "error": "error"} {
		if got := codeLabel(in); got != want {
			t.Errorf("codeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkRelayAdd is what the relay pays per read or write batch: one
// add on a service's cached counter, from every core at once.
func BenchmarkRelayAdd(b *testing.B) {
	m := NewEdge([]string{"db"}, func() bool { return false }, noCluster)
	c := m.Service("db").ToClient
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(32 << 10)
		}
	})
}

func noCluster() (StoreCluster, bool) { return StoreCluster{}, false }
