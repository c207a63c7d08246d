// Package sessionpage is the edge's browser page for a one-time session
// link: it shows what a TCP service sends, as lines of text (a log tail),
// over the session's WebSocket.
package sessionpage

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

// Path is where an edge host serves the page. The token follows in the
// fragment, Path+"#"+token, which browsers never send: the edge serves
// the same page to everyone, and the page presents the token in the
// WebSocket's Sec-WebSocket-Protocol header at /s/. Serving the page
// therefore never uses a link up. Edge hosts serve no service, and the
// "/.sallyport/" prefix is the edge's own, so no service can collide.
const Path = "/.sallyport/view"

var (
	//go:embed page.js
	script string
	//go:embed page.css
	style string
)

// page is the HTML, with its style and script inline; csp allows exactly
// those two (by hash) and WebSockets to the page's own origin.
var page, csp = build()

func build() (string, string) {
	html := `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>sallyport session</title>
<style>` + style + `</style>
</head>
<body>
<header><h1>sallyport session</h1><p id="state" class="wait">Loading…</p></header>
<main id="log" aria-live="polite"></main>
<script>` + script + `</script>
</body>
</html>
`
	hash := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
	}
	policy := fmt.Sprintf("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
		hash(script), hash(style))
	return html, policy
}

// Link is the page's address for a session whose WebSocket link has the
// scheme and authority base (wss://HOST[:PORT] or ws://…).
func Link(base, token string) string {
	if rest, ok := strings.CutPrefix(base, "wss://"); ok {
		base = "https://" + rest
	} else if rest, ok := strings.CutPrefix(base, "ws://"); ok {
		base = "http://" + rest
	}
	return base + Path + "#" + token
}

// Serve answers a GET or HEAD for the page; other methods get 405.
func Serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprint(w, page)
}
