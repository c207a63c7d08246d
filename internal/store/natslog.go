package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// natsLogger routes the embedded NATS server's log lines into slog. Notices
// (start-up banners, JetStream limits) and debug lines go to debug level so
// that an edge's normal log stays quiet; warnings and errors keep their level
// because they report real trouble (a full disk, a damaged store). Trace
// lines are dropped.
type natsLogger struct {
	log *slog.Logger
}

func (l natsLogger) logf(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, v...), "component", "nats")
}

func (l natsLogger) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Warnf logs at warning level, except the warning nats-server gives for a
// cluster TLS configuration with InsecureSkipVerify: pki.RouteTLSConfig
// sets it only to verify the peer itself (VerifyConnection, against the
// edge CA, on both sides of every route), so the warning is not true here.
// The meta layer's snapshot timing is a notice, not a warning.
func (l natsLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...) // rate-limited warnings come as "%s"
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "TLS certificate chain and hostname of solicited routes will not be verified") ||
		strings.HasPrefix(msg, "Metalayer blocking snapshot") { // a timing notice at every stop of a member
		level = slog.LevelDebug
	}
	l.logf(level, "%s", []any{msg})
}
func (l natsLogger) Fatalf(format string, v ...any) { l.logf(slog.LevelError, format, v) }
func (l natsLogger) Errorf(format string, v ...any) { l.logf(slog.LevelError, format, v) }
func (l natsLogger) Debugf(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }
func (l natsLogger) Tracef(string, ...any)          {}
