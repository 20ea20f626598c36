package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// The dashboard and the JavaScript client, embedded so that the server works
// offline and a page never loads anything from elsewhere.
//
//go:embed web/index.html web/dashboard.js web/dashboard.css web/shardhub.js
var webFiles embed.FS

// asset is one embedded file, served with a strong ETag so that browsers
// revalidate instead of downloading it again.
type asset struct {
	body        []byte
	contentType string
	etag        string
	page        bool // an HTML page: served with a Content-Security-Policy
	public      bool // importable by pages on any origin (CORS)
}

func loadAsset(name, contentType string) asset {
	b, err := webFiles.ReadFile("web/" + name)
	if err != nil {
		panic("shardhub: embedded " + name + " missing: " + err.Error()) // a build defect, not a runtime condition
	}
	sum := sha256.Sum256(b)
	return asset{body: b, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// ShardhubJS is the JavaScript client served at GET /shardhub.js (an ES
// module; docs/client.md), for embedders who serve it from their own routes.
func ShardhubJS() []byte { return bytes.Clone(shardhubJS.body) }

var (
	dashboardHTML = withFlags(loadAsset("index.html", "text/html; charset=utf-8"), true, false)
	dashboardJS   = loadAsset("dashboard.js", "text/javascript; charset=utf-8")
	dashboardCSS  = loadAsset("dashboard.css", "text/css; charset=utf-8")
	shardhubJS    = withFlags(loadAsset("shardhub.js", "text/javascript; charset=utf-8"), false, true)
)

func withFlags(a asset, page, public bool) asset {
	a.page, a.public = page, public
	return a
}

// serve answers GET (and HEAD) for the asset.
func (a asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // revalidate: a new server version may bring new files
	h.Set("X-Content-Type-Options", "nosniff")
	if a.page {
		// The page loads its own script and style only, and talks to this
		// host's WebSocket endpoint only.
		connect := "'self'"
		if plainHost(r.Host) {
			connect += " ws://" + r.Host + " wss://" + r.Host
		}
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src "+connect+
			"; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
		h.Set("Referrer-Policy", "no-referrer")
	}
	if a.public {
		// A public library: pages on other origins may import it (module
		// scripts are fetched with CORS). Connecting is still subject to the
		// WebSocket origin check.
		h.Set("Access-Control-Allow-Origin", "*")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// mountWeb adds the dashboard and the client library to mux.
func mountWeb(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", dashboardHTML.serve)
	mux.HandleFunc("GET /dashboard.js", dashboardJS.serve)
	mux.HandleFunc("GET /dashboard.css", dashboardCSS.serve)
	mux.HandleFunc("GET /shardhub.js", shardhubJS.serve)
}

// plainHost reports whether host is made of the characters of a host name, an
// IP address and a port only, so that it can be written into a header value
// as is.
func plainHost(host string) bool {
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".:-[]", c) >= 0) {
			return false
		}
	}
	return true
}
