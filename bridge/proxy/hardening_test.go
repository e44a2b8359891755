package proxy

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Directus's app server (express.static) answers a directory without its
// trailing slash with a 301 to the same URL, query included, and the URL
// in the body: the static token swapped into the query must not reach the
// client, who gets its own token back in its place.
func TestRedirectDoesNotLeakStaticToken(t *testing.T) {
	up := newUpstream(t)
	up.answer = func(w http.ResponseWriter, r *http.Request) bool {
		loc := r.URL.Path + "/?" + r.URL.RawQuery
		w.Header().Set("Location", loc)
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(http.StatusMovedPermanently)
		_, _ = w.Write([]byte("<p>Redirecting to " + loc + "</p>"))
		return true
	}
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", px.URL+"/admin/assets?access_token="+idpToken, nil)
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if got := up.requests(); len(got) != 1 || !strings.Contains(got[0].rawQuery, "dbr_") {
		t.Fatalf("upstream did not get the static token: %+v", got)
	}
	if loc := res.Header.Get("Location"); strings.Contains(loc, "dbr_") || loc != "/admin/assets/?access_token="+idpToken {
		t.Errorf("Location = %q, want the client's own token back", loc)
	}
	if strings.Contains(body.String(), "dbr_") {
		t.Errorf("body leaks the static token: %q", body.String())
	}
	for k, v := range res.Header {
		if strings.Contains(strings.Join(v, ","), "dbr_") {
			t.Errorf("header %s leaks the static token: %q", k, v)
		}
	}
}

// Directus's query parser takes [access_token]=T as access_token=T: an IdP
// token there is refused, not passed on unswapped (Directus would read it
// and log it, its log redacting only access_token=).
func TestQueryParserSpellingsRefused(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	for _, q := range []string{"[access_token]=" + idpToken, "%5Baccess_token%5D=" + idpToken, "access_token[x=a.b]=" + idpToken} {
		res, _ := do(t, "GET", px.URL+"/items/x?"+q, nil, nil)
		if res.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", q, res.StatusCode)
		}
	}
	if got := up.requests(); len(got) != 0 {
		t.Errorf("Directus got %d requests, want none: %+v", len(got), got)
	}
}

// A small body is read whole before it is forwarded (to send it again
// after a rotation): a client that stops sending it must not hold its
// upstream slot for ever.
func TestSlowReplayBodyTimesOut(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	p, px, _ := newTestProxy(t, up.srv.URL, ex, Options{MaxConnections: 1, QueueTimeout: 100 * time.Millisecond})
	p.bodyTimeout = 300 * time.Millisecond
	c, err := net.Dial("tcp", px.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /items/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+idpToken+"\r\nContent-Length: 100\r\n\r\n0123456789")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	if res.StatusCode != 400 {
		t.Errorf("status %d, want 400", res.StatusCode)
	}
	// The slot is free again.
	if res, _ := do(t, "GET", px.URL+"/items/x", nil, nil); res.StatusCode != 200 {
		t.Errorf("next request: %d, want 200", res.StatusCode)
	}
	if got := up.requests(); len(got) != 1 {
		t.Errorf("Directus got %d requests, want 1", len(got))
	}
}

// net/http's reverse proxy re-encodes a query it cannot parse (a ";" or a
// bad escape anywhere) before sending it: the credentials are looked for
// in the query Directus gets, not only in the one the client wrote.
func TestCredentialsReadFromTheQuerySent(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	// As written, qs reads access_token=xy here; re-encoded it reads
	// access_token=<the IdP token>]=xy.
	for _, q := range []string{"[access_token]q=" + idpToken + "]=xy&a=;", "[access_token]q=" + idpToken + "]=xy&a=%zz"} {
		res, _ := do(t, "GET", px.URL+"/items/x?"+q, nil, nil)
		if res.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", q, res.StatusCode)
		}
	}
	if got := up.requests(); len(got) != 0 {
		t.Errorf("Directus got %d requests, want none: %+v", len(got), got)
	}
	// A query that is re-encoded still has its token swapped.
	res, _ := do(t, "GET", px.URL+"/items/x?access_token="+idpToken+"&a=;", nil, nil)
	if got := up.requests(); res.StatusCode != 200 || len(got) != 1 || got[0].rawQuery != "access_token=dbr_idp-header_payload_sig" {
		t.Errorf("status %d, Directus got %+v", res.StatusCode, got)
	}
}

// An Upgrade header without Connection: upgrade is not an upgrade (the
// reverse proxy sends an ordinary request): such a request counts against
// max_connections, not against max_websockets, which it would otherwise
// use to pass the bound.
func TestUpgradeHeaderAloneIsNotAWebsocket(t *testing.T) {
	up := newUpstream(t)
	hold := make(chan struct{})
	entered := make(chan struct{}, 4)
	up.answer = func(w http.ResponseWriter, r *http.Request) bool { entered <- struct{}{}; <-hold; return false }
	_, px, _ := newTestProxy(t, up.srv.URL, newFakeExchanger(), Options{MaxConnections: 1, QueueTimeout: 100 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); do(t, "GET", px.URL+"/items/x", nil, nil) }()
	<-entered
	c, err := net.Dial("tcp", px.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /items/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	close(hold)
	<-done
	if err != nil || res.StatusCode != 503 {
		t.Errorf("second request with Upgrade alone: %v %v, want 503 (bound)", res, err)
	}
}

// The token put in place of a refused websocket auth message must be one
// Directus can never accept. Directus looks any token that is not its own
// JWT up as a static token, which an admin may set to any string; a JWT of
// issuer "directus" it verifies against its secret, which this one's
// signature cannot match.
func TestRefusedTokenIsNoStaticToken(t *testing.T) {
	parts := strings.Split(refusedToken, ".")
	if len(parts) != 3 {
		t.Fatalf("refusedToken %q is not a JWT", refusedToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss string `json:"iss"`
	}
	if err != nil || json.Unmarshal(payload, &claims) != nil || claims.Iss != "directus" {
		t.Errorf("refusedToken payload %q: want iss directus", payload)
	}
}

// After a replay, the token hidden in the answer is the one sent last.
func TestRedirectAfterReplayHidesTheNewToken(t *testing.T) {
	up := newUpstream(t)
	live := "dbr_new"
	up.answer = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("access_token") != live {
			w.WriteHeader(401)
			return true
		}
		w.Header().Set("Location", r.URL.Path+"/?"+r.URL.RawQuery)
		w.WriteHeader(http.StatusMovedPermanently)
		return true
	}
	ex := newFakeExchanger()
	ex.set(idpToken, "dbr_old")
	ex.onSwap = func(string, int) { ex.set(idpToken, "dbr_new") }
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", px.URL+"/admin/assets?access_token="+idpToken, nil)
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if loc := res.Header.Get("Location"); res.StatusCode != 301 || loc != "/admin/assets/?access_token="+idpToken {
		t.Errorf("%d Location = %q, want the client's own token back", res.StatusCode, loc)
	}
}

func TestIsWebsocketAsTheReverseProxyReadsIt(t *testing.T) {
	for _, tc := range []struct {
		h    http.Header
		want bool
	}{
		{http.Header{"Upgrade": {"websocket"}}, false},
		{http.Header{"Upgrade": {"websocket"}, "Connection": {"keep-alive, Upgrade"}}, true},
		{http.Header{"Upgrade": {"WebSocket"}, "Connection": {"upgrade"}}, true},
		{http.Header{"Upgrade": {"h2c", "websocket"}, "Connection": {"upgrade"}}, false},
		{http.Header{"Upgrade": {"websocket"}, "Connection": {"close"}}, false},
	} {
		if got := isWebsocket(tc.h); got != tc.want {
			t.Errorf("isWebsocket(%v) = %v, want %v", tc.h, got, tc.want)
		}
	}
}
