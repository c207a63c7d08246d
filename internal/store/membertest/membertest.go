// Package membertest starts embedded store cluster members for tests of
// the roles built on them (a witness, an edge), the way an edge opens its
// store, with route certificates of a test CA.
//
//	ca := pkitest.NewCA(t)
//	addrs := []string{loopback.FreeAddr(t), loopback.FreeAddr(t), witnessAddr}
//	stores := membertest.OpenMembers(t, ca, addrs, 2) // addrs[2] is the witness's
package membertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/store"
)

// OpenMembers opens n stores at once (a member waits for a quorum, so
// they must start together), member i listening on addrs[i] with routes to
// every other address in addrs, named sallyport-m<i>, its route certificate
// from ca. It fails the test if one cannot open within a minute, and
// closes them when the test ends.
func OpenMembers(t testing.TB, ca *pki.CA, addrs []string, n int) []*store.JetStream {
	t.Helper()
	sts := make([]*store.JetStream, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		name := fmt.Sprintf("sallyport-m%d", i)
		var routes []string
		for j, a := range addrs {
			if j != i {
				routes = append(routes, a)
			}
		}
		tlsCfg := pki.RouteTLSConfig(ca.Certificate(), pkitest.Route(t, ca, name))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sts[i], errs[i] = store.Open(ctx, store.Options{Dir: t.TempDir(), Name: name,
				Cluster: &store.Cluster{Listen: addrs[i], Routes: routes, TLS: tlsCfg}})
		})
	}
	wg.Wait()
	for i, st := range sts {
		if st != nil {
			t.Cleanup(func() { st.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("store member %d: %v", i, errs[i])
		}
	}
	return sts
}
