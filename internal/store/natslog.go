package store

import (
	"context"
	"fmt"
	"log/slog"
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
func (l natsLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l natsLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l natsLogger) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug, format, v) }
func (l natsLogger) Tracef(string, ...any)           {}
