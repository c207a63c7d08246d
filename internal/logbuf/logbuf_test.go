package logbuf_test

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
)

func TestLinesMatchEveryPieceAndFieldsExactly(t *testing.T) {
	var b logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&b, nil))
	log.Info("client refused", "remote", "1.2.3.4:56", "reason", "rate")
	log.Info("client refused", "remote", "1.2.3.4:5")
	mark := b.Mark()
	log.Info("client admitted", "remote", "1.2.3.4:5")

	if n := b.Count("client refused"); n != 2 {
		t.Errorf("Count(client refused) = %d, want 2", n)
	}
	// The field at the end of a line matches; a longer value does not.
	if got := b.Lines("client refused", logbuf.Field("remote", "1.2.3.4:5")); len(got) != 1 {
		t.Errorf("lines with remote=1.2.3.4:5: %q, want the second only", got)
	}
	if got := b.LinesSince(mark, logbuf.Field("remote", "1.2.3.4:5")); len(got) != 1 || b.Count("client admitted") != 1 {
		t.Errorf("lines since the mark: %q, want the admitted one only", got)
	}
	if got := b.Tail(1); got != b.Lines("client admitted")[0] {
		t.Errorf("Tail(1) = %q, want the last line", got)
	}
}

func TestWaitForSeesLinesWrittenConcurrently(t *testing.T) {
	var b logbuf.Buffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				fmt.Fprintf(&b, "writer=%d line=%d\n", i, j)
			}
		})
	}
	b.WaitFor(t, 10*time.Second, 200, "writer=")
	wg.Wait()
	if n := b.Count("line=49"); n != 4 {
		t.Errorf("%d writers' last lines, want 4:\n%s", n, b.String())
	}
}
