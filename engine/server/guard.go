package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Who may use the HTTP API (docs/security.md).
//
// The publish endpoints (/api/broadcast, /api/publish, /api/send) make every
// connected client receive what they are given, so:
//
//   - a browser's cross-site request is refused (403), whatever it carries:
//     Sec-Fetch-Site other than same-origin/none, or an Origin that is not this
//     host, means a page on another site is making its visitor's browser call us;
//   - with Options.APIToken set, `Authorization: Bearer <token>` is required
//     (401 otherwise; the scheme is case-insensitive, the comparison constant
//     time, a bare token is refused);
//   - without a token, only loopback clients are answered (403), unless
//     Options.AllowRemoteAPI opens the API to every address; and only with a
//     Host that names this machine (localhost, *.localhost or an IP address):
//     a page whose DNS name an attacker rebinds to 127.0.0.1 is same-origin
//     with itself and connects from loopback, but sends its own Host (403),
//     and so does a request a reverse proxy on this host forwards;
//   - without a token, the body must be declared `Content-Type:
//     application/json` (415): a cross-site page can send a text/plain or form
//     POST without asking the browser's permission, never a JSON one.
//
// Options.StatsToken, when set, guards /metrics, /api/stats and /api/cluster the
// same way.

// bearer compares the request's bearer token with want in constant time. The
// scheme is matched case-insensitively (RFC 7235); anything else, a bare token
// included, fails.
func bearer(r *http.Request, want string) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// Comparing fixed-size digests keeps the time independent of where the
	// strings first differ and of the token's length.
	a, b := sha256.Sum256([]byte(strings.TrimSpace(tok))), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// crossSite reports whether r is a browser request made by a page of another
// site.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	return err != nil || !strings.EqualFold(u.Host, r.Host)
}

// loopback reports whether the request comes from a loopback address.
func loopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// localHost reports whether a Host header names this machine rather than a
// DNS name someone else controls: localhost, a name under .localhost, or an
// IP address.
func localHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	return host == "localhost" || strings.HasSuffix(host, ".localhost") || net.ParseIP(host) != nil
}

// jsonBody reports whether the request declares a JSON body.
func jsonBody(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// guardPublish wraps a publish endpoint with the rules above.
func (s *api) guardPublish(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case crossSite(r):
			s.fail(w, r, http.StatusForbidden, "cross_site", "cross-site browser requests are refused")
		case s.opts.APIToken != "":
			if !bearer(r, s.opts.APIToken) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="shardhub"`)
				s.fail(w, r, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
				return
			}
			next(w, r)
		case !s.opts.AllowRemoteAPI && !loopback(r):
			s.fail(w, r, http.StatusForbidden, "forbidden",
				"without --api-token the publish API answers loopback clients only")
		case !s.opts.AllowRemoteAPI && !localHost(r.Host):
			s.fail(w, r, http.StatusForbidden, "forbidden",
				"without --api-token the publish API answers requests for localhost or an IP address only")
		case !jsonBody(r):
			s.fail(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type",
				"send Content-Type: application/json (or use a bearer token)")
		default:
			next(w, r)
		}
	}
}

// guardDebug wraps the profiling routes (Options.Pprof): they reveal the
// command line (tokens given as flags included) and memory, so they need the
// stats token when one is set, and answer loopback clients only otherwise.
func (s *api) guardDebug(next http.HandlerFunc) http.HandlerFunc {
	if s.opts.StatsToken != "" {
		return s.guardStats(next)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !loopback(r) || !localHost(r.Host) || crossSite(r) {
			s.fail(w, r, http.StatusForbidden, "forbidden", "profiling answers loopback clients only (or set --stats-token)")
			return
		}
		next(w, r)
	}
}

// guardStats wraps a stats endpoint with Options.StatsToken, when set.
func (s *api) guardStats(next http.HandlerFunc) http.HandlerFunc {
	if s.opts.StatsToken == "" {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !bearer(r, s.opts.StatsToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shardhub"`)
			s.fail(w, r, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

// TokenAuth returns an engine.Config.Authenticate hook that admits clients
// presenting token, as `?token=` (browsers cannot set headers on a WebSocket)
// or `Authorization: Bearer`. Both are compared in constant time.
func TokenAuth(token string) func(*http.Request) (string, error) {
	want := sha256.Sum256([]byte(token))
	return func(r *http.Request) (string, error) {
		if q := r.URL.Query().Get("token"); q != "" {
			got := sha256.Sum256([]byte(q))
			if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
				return "", nil
			}
			return "", errWrongToken
		}
		if bearer(r, token) {
			return "", nil
		}
		return "", errWrongToken
	}
}

var errWrongToken = errors.New("missing or wrong token")
