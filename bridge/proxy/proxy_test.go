package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// seen is what the upstream received.
type seen struct {
	method, path, rawQuery string
	header                 http.Header
	body                   []byte
}

// upstream is a stand-in Directus that records requests and answers 200
// with a small JSON, or what answer says.
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []seen
	answer func(w http.ResponseWriter, r *http.Request) bool // true: answered
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		answer := u.answer
		u.mu.Unlock()
		if answer != nil && answer(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		_, _ = io.WriteString(w, `{"data":{"ok":true}}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.got...)
}

func newTestProxy(t *testing.T, target string, ex Exchanger, o Options) (*Proxy, *httptest.Server, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	o.Upstream, _ = url.Parse(target)
	o.Exchanger = ex
	o.Logger = slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, nil))
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv, &logs
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func do(t *testing.T, method, u string, body io.Reader, h http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

const idpToken = "idp-header.payload.sig"

func TestPassThroughUntouched(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	for _, tc := range []struct {
		name  string
		h     http.Header
		query string
	}{
		{name: "anonymous"},
		{name: "Directus JWT", h: http.Header{"Authorization": {"Bearer eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJkaXJlY3R1cyJ9.sig"}}},
		{name: "static token", h: http.Header{"Authorization": {"Bearer dbr_static"}}},
		{name: "static token in the query", query: "access_token=dbr_static&fields=%2A"},
		{name: "cookie", h: http.Header{"Cookie": {"directus_session_token=" + idpToken}}},
		{name: "basic", h: http.Header{"Authorization": {"Basic " + idpToken}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			h := tc.h.Clone()
			if h == nil {
				h = http.Header{}
			}
			h.Set("Connection", "X-Hop")
			h.Set("X-Hop", "dropped")
			h.Set("X-Custom", "kept")
			res, body := do(t, "GET", px.URL+"/items/things?"+tc.query, nil, h)
			if res.StatusCode != 200 || res.Header.Get("X-Upstream") != "yes" || string(body) != `{"data":{"ok":true}}` {
				t.Fatalf("answer %d %q %q", res.StatusCode, res.Header, body)
			}
			got := up.requests()[before]
			if got.path != "/items/things" || got.rawQuery != tc.query {
				t.Errorf("upstream got %s?%s", got.path, got.rawQuery)
			}
			for _, k := range []string{"Authorization", "Cookie", "X-Custom"} {
				if g, w := got.header.Get(k), h.Get(k); g != w {
					t.Errorf("%s = %q, want %q", k, g, w)
				}
			}
			if got.header.Get("X-Hop") != "" {
				t.Errorf("hop-by-hop header passed on")
			}
			if got.header.Get("X-Forwarded-For") != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q", got.header.Get("X-Forwarded-For"))
			}
		})
	}
	if s := ex.swapped(); len(s) != 0 {
		t.Errorf("swapped %v", s)
	}
}

func TestSwapsHeaderAndQuery(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	want := "dbr_idp-header_payload_sig"

	res, _ := do(t, "GET", px.URL+"/items/things?fields=%2A", nil, http.Header{"Authorization": {"Bearer " + idpToken}})
	if res.StatusCode != 200 || res.Header.Get("X-Request-Id") == "" {
		t.Fatalf("status %d, request id %q", res.StatusCode, res.Header.Get("X-Request-Id"))
	}
	got := up.requests()[0]
	if a := got.header.Get("Authorization"); a != "Bearer "+want {
		t.Errorf("Authorization = %q, want the static token", a)
	}
	if got.rawQuery != "fields=%2A" {
		t.Errorf("query = %q", got.rawQuery)
	}

	res, _ = do(t, "POST", px.URL+"/graphql?access_token="+idpToken+"&x=%20y", strings.NewReader(`{"query":"{ things { id } }"}`),
		http.Header{"Content-Type": {"application/json"}})
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	got = up.requests()[1]
	if got.rawQuery != "access_token="+want+"&x=%20y" || got.header.Get("Authorization") != "" {
		t.Errorf("query = %q, Authorization %q", got.rawQuery, got.header.Get("Authorization"))
	}
	if string(got.body) != `{"query":"{ things { id } }"}` {
		t.Errorf("body = %q", got.body)
	}
	if s := ex.swapped(); len(s) != 2 {
		t.Errorf("swaps = %v", s)
	}
}

func TestRefusalsLookLikeDirectus(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        *bridge.Error
		status     int
		code       string
		retryAfter string
	}{
		{name: "bad token", err: &bridge.Error{Code: "invalid_request", Status: 400, Description: "subject_token: signature or issuer check failed"},
			status: 401, code: "INVALID_CREDENTIALS"},
		{name: "no rule", err: &bridge.Error{Code: "invalid_scope", Status: 400, Description: "no mapping rule"}, status: 401, code: "INVALID_CREDENTIALS"},
		{name: "expired", err: &bridge.Error{Code: "invalid_request", Status: 400, Description: "subject_token: token expired",
			Cause: &bridge.TokenError{Reason: "token expired", Expired: true}}, status: 401, code: "TOKEN_EXPIRED"},
		{name: "limited", err: &bridge.Error{Code: "temporarily_unavailable", Status: 429, RetryAfter: 1500 * time.Millisecond},
			status: 429, code: "REQUESTS_EXCEEDED", retryAfter: "2"},
		{name: "Directus down", err: &bridge.Error{Code: "temporarily_unavailable", Status: 503, RetryAfter: 5 * time.Second,
			Description: "Directus is not available, try again later"}, status: 503, code: "SERVICE_UNAVAILABLE", retryAfter: "5"},
		{name: "internal", err: &bridge.Error{Code: "server_error", Status: 500, Description: "internal error", Cause: errors.New("secret detail")},
			status: 500, code: "INTERNAL_SERVER_ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t)
			ex := newFakeExchanger()
			ex.refuse(idpToken, tc.err)
			_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
			for _, u := range []string{"/items/things", "/items/things?access_token=" + idpToken} {
				h := http.Header{}
				if !strings.Contains(u, "access_token") {
					h.Set("Authorization", "Bearer "+idpToken)
				}
				res, body := do(t, "PATCH", px.URL+u, strings.NewReader(`{"a":1}`), h)
				var doc struct {
					Errors []struct {
						Message    string
						Extensions struct{ Code string }
					}
				}
				if err := json.Unmarshal(body, &doc); err != nil || len(doc.Errors) != 1 {
					t.Fatalf("body %q: %v", body, err)
				}
				if res.StatusCode != tc.status || doc.Errors[0].Extensions.Code != tc.code || res.Header.Get("Retry-After") != tc.retryAfter {
					t.Errorf("%s: %d %s Retry-After %q, want %d %s %q", u, res.StatusCode, doc.Errors[0].Extensions.Code,
						res.Header.Get("Retry-After"), tc.status, tc.code, tc.retryAfter)
				}
				if strings.Contains(string(body), tc.err.Description) && tc.err.Description != "" && tc.status != 503 ||
					strings.Contains(string(body), "secret") || strings.Contains(string(body), idpToken) {
					t.Errorf("answer tells the bridge's reason or the token: %s", body)
				}
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("a refused request reached Directus %d times", n)
			}
		})
	}
}

func TestAmbiguousCredentialsRefused(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	for name, tc := range map[string]struct {
		h     http.Header
		query string
	}{
		"header and query":  {h: http.Header{"Authorization": {"Bearer dbr_x"}}, query: "access_token=" + idpToken},
		"two headers":       {h: http.Header{"Authorization": {"Bearer " + idpToken, "Bearer dbr_x"}}},
		"query array":       {query: "access_token[]=" + idpToken},
		"three words":       {h: http.Header{"Authorization": {"Bearer " + idpToken + " x"}}},
		"undecodable value": {query: "access_token=" + idpToken + "%zz"},
	} {
		res, body := do(t, "GET", px.URL+"/items/x?"+tc.query, nil, tc.h)
		if res.StatusCode != 400 || !strings.Contains(string(body), "INVALID_PAYLOAD") {
			t.Errorf("%s: %d %s", name, res.StatusCode, body)
		}
	}
	if len(up.requests()) != 0 || len(ex.swapped()) != 0 {
		t.Errorf("upstream got %d requests, swaps %v", len(up.requests()), ex.swapped())
	}
}

func TestUpstreamDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there
	ex := newFakeExchanger()
	_, px, logs := newTestProxy(t, "http://"+addr, ex, Options{})
	res, body := do(t, "GET", px.URL+"/items/x?access_token="+idpToken, nil, nil)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "SERVICE_UNAVAILABLE") {
		t.Errorf("got %d %q %s", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	if strings.Contains(logs.String(), "dbr_") || strings.Contains(logs.String(), idpToken) {
		t.Errorf("a token reached the log: %s", logs)
	}
	if !strings.Contains(logs.String(), "upstream failed") {
		t.Errorf("no log line: %s", logs)
	}
}

func TestUpstreamSlowHeaders(t *testing.T) {
	up := newUpstream(t)
	release := make(chan struct{})
	up.answer = func(w http.ResponseWriter, r *http.Request) bool { <-release; return false }
	defer close(release)
	_, px, _ := newTestProxy(t, up.srv.URL, newFakeExchanger(), Options{ResponseTimeout: 200 * time.Millisecond})
	res, body := do(t, "GET", px.URL+"/items/x", nil, nil)
	if res.StatusCode != 503 || !strings.Contains(string(body), "in time") {
		t.Errorf("got %d %s", res.StatusCode, body)
	}
}

func TestUpstreamErrorsPassThrough(t *testing.T) {
	up := newUpstream(t)
	up.answer = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(413)
		_, _ = io.WriteString(w, `{"errors":[{"message":"too large","extensions":{"code":"CONTENT_TOO_LARGE"}}]}`)
		return true
	}
	_, px, _ := newTestProxy(t, up.srv.URL, newFakeExchanger(), Options{})
	res, body := do(t, "POST", px.URL+"/files", strings.NewReader("x"), http.Header{"Authorization": {"Bearer " + idpToken}})
	if res.StatusCode != 413 || res.Header.Get("Retry-After") != "7" || !strings.Contains(string(body), "CONTENT_TOO_LARGE") {
		t.Errorf("got %d %q %s", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
}

// TestReplayAfterRotation: the token is replaced between the exchange and
// Directus's check. A request that can be sent again is, once, with the
// live token; a streamed one gets Directus's 401.
func TestReplayAfterRotation(t *testing.T) {
	up := newUpstream(t)
	var live atomic.Value
	live.Store("dbr_old")
	up.answer = func(w http.ResponseWriter, r *http.Request) bool {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if tok != live.Load().(string) {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"errors":[{"message":"Invalid user credentials.","extensions":{"code":"INVALID_CREDENTIALS"}}]}`)
			return true
		}
		return false
	}
	ex := newFakeExchanger()
	ex.set(idpToken, "dbr_old")
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	h := http.Header{"Authorization": {"Bearer " + idpToken}, "Content-Type": {"application/json"}}

	// Rotated in Directus after the exchange answered dbr_old.
	ex.onSwap = func(string, int) { live.Store("dbr_new"); ex.set(idpToken, "dbr_new") }
	res, _ := do(t, "POST", px.URL+"/items/x", strings.NewReader(`{"n":1}`), h)
	ex.onSwap = nil
	if res.StatusCode != 200 {
		t.Fatalf("small request after a rotation: %d, want 200", res.StatusCode)
	}
	got := up.requests()
	if len(got) != 2 || got[1].header.Get("Authorization") != "Bearer dbr_new" || string(got[1].body) != `{"n":1}` {
		t.Fatalf("upstream got %d requests; last %q %q", len(got), got[len(got)-1].header.Get("Authorization"), got[len(got)-1].body)
	}

	// A 401 for another reason: the token is the live one: no replay.
	live.Store("dbr_suspended")
	res, _ = do(t, "GET", px.URL+"/items/x", nil, h)
	if res.StatusCode != 401 || len(up.requests()) != 3 {
		t.Errorf("401 with the live token: %d after %d requests, want 401 after 3", res.StatusCode, len(up.requests()))
	}

	// A streamed body cannot be sent again: Directus's answer passes.
	live.Store("dbr_new")
	ex.onSwap = func(string, int) { live.Store("dbr_newer"); ex.set(idpToken, "dbr_newer") }
	pr, pw := io.Pipe()
	go func() { _, _ = io.WriteString(pw, `{"n":2}`); pw.Close() }()
	res, _ = do(t, "POST", px.URL+"/items/x", pr, h)
	if res.StatusCode != 401 || len(up.requests()) != 4 {
		t.Errorf("streamed body: %d after %d requests, want 401 after 4", res.StatusCode, len(up.requests()))
	}
}

func TestConnectionBound(t *testing.T) {
	up := newUpstream(t)
	hold := make(chan struct{})
	entered := make(chan struct{}, 4)
	up.answer = func(w http.ResponseWriter, r *http.Request) bool { entered <- struct{}{}; <-hold; return false }
	_, px, _ := newTestProxy(t, up.srv.URL, newFakeExchanger(), Options{MaxConnections: 2, QueueTimeout: 100 * time.Millisecond})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); do(t, "GET", px.URL+"/items/x", nil, nil) }()
	}
	<-entered
	<-entered
	res, body := do(t, "GET", px.URL+"/items/x", nil, nil)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "SERVICE_UNAVAILABLE") {
		t.Errorf("third request: %d %s", res.StatusCode, body)
	}
	close(hold)
	wg.Wait()
	if res, _ := do(t, "GET", px.URL+"/items/x", nil, nil); res.StatusCode != 200 {
		t.Errorf("after the others finished: %d", res.StatusCode)
	}
	if n := len(up.requests()); n != 3 {
		t.Errorf("upstream got %d requests, want 3", n)
	}
}

func TestForwardedHeaders(t *testing.T) {
	up := newUpstream(t)
	h := http.Header{"X-Forwarded-For": {"203.0.113.9, 10.0.0.1"}, "X-Forwarded-Host": {"api.example.com"}, "X-Forwarded-Proto": {"https"}}
	for name, tc := range map[string]struct {
		trusted                []netip.Prefix
		wantFor, host, wantPro string
	}{
		"untrusted peer": {wantFor: "127.0.0.1", wantPro: "http"},
		"trusted peer":   {trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, wantFor: "203.0.113.9, 10.0.0.1, 127.0.0.1", host: "api.example.com", wantPro: "https"},
	} {
		_, px, _ := newTestProxy(t, up.srv.URL, newFakeExchanger(), Options{TrustedProxies: tc.trusted})
		before := len(up.requests())
		do(t, "GET", px.URL+"/server/ping", nil, h)
		got := up.requests()[before].header
		host := tc.host
		if host == "" {
			host = strings.TrimPrefix(px.URL, "http://")
		}
		if got.Get("X-Forwarded-For") != tc.wantFor || got.Get("X-Forwarded-Host") != host || got.Get("X-Forwarded-Proto") != tc.wantPro {
			t.Errorf("%s: For %q Host %q Proto %q", name, got.Get("X-Forwarded-For"), got.Get("X-Forwarded-Host"), got.Get("X-Forwarded-Proto"))
		}
	}
}

// pattern is an endless stream of known bytes.
type pattern struct{ n, limit int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.n >= p.limit {
		return 0, io.EOF
	}
	k := min(int64(len(b)), p.limit-p.n)
	for i := range k {
		b[i] = byte((p.n + i) % 251)
	}
	p.n += k
	return int(k), nil
}

// TestStreamsBodies sends 256 MiB up and down through the proxy and checks
// that it allocates a small fraction of that: neither body is held.
func TestStreamsBodies(t *testing.T) {
	const size = 256 << 20
	var upSum [32]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			copy(upSum[:], h.Sum(nil))
			fmt.Fprintf(w, "%d", n)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, &pattern{limit: size})
	}))
	t.Cleanup(srv.Close)
	_, px, _ := newTestProxy(t, srv.URL, newFakeExchanger(), Options{})
	h := http.Header{"Authorization": {"Bearer " + idpToken}}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", px.URL+"/files", &pattern{limit: size})
	req.Header = h.Clone()
	req.ContentLength = size
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := sha256.New()
	_, _ = io.Copy(want, &pattern{limit: size})
	if string(b) != fmt.Sprint(size) || !bytes.Equal(upSum[:], want.Sum(nil)) {
		t.Fatalf("upload: upstream read %s bytes, digest match %v", b, bytes.Equal(upSum[:], want.Sum(nil)))
	}
	req, _ = http.NewRequestWithContext(t.Context(), "GET", px.URL+"/assets/x", nil)
	req.Header = h.Clone()
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, _ := io.Copy(got, res.Body)
	res.Body.Close()
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("download: %d bytes", n)
	}
	runtime.ReadMemStats(&after)
	// Everything in this process (client, proxy, upstream) allocated less
	// than 1/8 of one body: 2 x 256 MiB went through without being held.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
		t.Errorf("allocated %d MiB moving 2 x %d MiB", alloc>>20, size>>20)
	}
}

func TestNewValidates(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "http://d/?a=1", "http://u:p@d"} {
		pu, _ := url.Parse(u)
		if u == "" {
			pu = nil
		}
		if _, err := New(Options{Upstream: pu, Exchanger: newFakeExchanger()}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// wsUpstream answers a websocket handshake and records the raw bytes the
// client side sends after it; it echoes "ok" text frames for each read.
func wsUpstream(t *testing.T) (*httptest.Server, chan []byte, chan http.Header) {
	got := make(chan []byte, 100)
	hdrs := make(chan http.Header, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebsocket(r.Header) {
			_, _ = io.WriteString(w, "pong")
			return
		}
		hdrs <- r.Header.Clone()
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		_ = brw.Flush()
		buf := make([]byte, 4096)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				got <- append([]byte(nil), buf[:n]...)
				_, _ = c.Write([]byte{0x81, 2, 'o', 'k'})
			}
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got, hdrs
}

func TestWebsocketAuthSwapped(t *testing.T) {
	srv, got, hdrs := wsUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, srv.URL, ex, Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(px.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /websocket?access_token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n", idpToken)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", res, err)
	}
	h := <-hdrs
	if h.Get("Sec-Websocket-Extensions") != "" {
		t.Errorf("compression offered to Directus: %q", h.Get("Sec-Websocket-Extensions"))
	}
	key := []byte{9, 8, 7, 6}
	msg := []byte(`{"type":"auth","access_token":"` + idpToken + `"}`)
	ping := frame(true, 1, []byte(`{"type":"ping"}`), key)
	all := append(frame(true, 1, msg, key), ping...)
	_, _ = c.Write(all[:7]) // in pieces
	time.Sleep(10 * time.Millisecond)
	_, _ = c.Write(all[7:])
	var recv []byte
	deadline := time.After(5 * time.Second)
	wantAuth := frame(true, 1, []byte(`{"access_token":"dbr_idp-header_payload_sig","type":"auth"}`), key)
	for len(recv) < len(wantAuth)+len(ping) {
		select {
		case b := <-got:
			recv = append(recv, b...)
		case <-deadline:
			t.Fatalf("upstream got %q", recv)
		}
	}
	if !bytes.Equal(recv, append(wantAuth, ping...)) {
		t.Errorf("upstream got %q\nwant %q", recv, append(wantAuth, ping...))
	}
	if s := ex.swapped(); len(s) != 2 { // the handshake's query, then the auth message
		t.Errorf("swaps %v", s)
	}
	// Directus's frames come back untouched.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "\x81\x02ok" {
		t.Errorf("client got %q, %v", b, err)
	}
}

func TestWebsocketRefusedAuthNeverForwarded(t *testing.T) {
	srv, got, _ := wsUpstream(t)
	ex := newFakeExchanger()
	ex.refuse(idpToken, &bridge.Error{Code: "invalid_request", Status: 400})
	_, px, _ := newTestProxy(t, srv.URL, ex, Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(px.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || res.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", res, err)
	}
	key := []byte{1, 2, 3, 4}
	_, _ = c.Write(frame(true, 1, []byte(`{"type":"auth","access_token":"`+idpToken+`"}`), key))
	select {
	case b := <-got:
		want := frame(true, 1, []byte(`{"access_token":"`+refusedToken+`","type":"auth"}`), key)
		if !bytes.Equal(b, want) {
			t.Errorf("upstream got %q, want %q", b, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing forwarded")
	}
}

func TestWebsocketBound(t *testing.T) {
	srv, _, _ := wsUpstream(t)
	_, px, _ := newTestProxy(t, srv.URL, newFakeExchanger(), Options{MaxWebsockets: 1, QueueTimeout: 50 * time.Millisecond})
	open := func() (net.Conn, int) {
		c, err := net.Dial("tcp", strings.TrimPrefix(px.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, res.StatusCode
	}
	a, code := open()
	defer a.Close()
	if code != 101 {
		t.Fatalf("first: %d", code)
	}
	b, code := open()
	b.Close()
	if code != 503 {
		t.Errorf("second websocket: %d, want 503", code)
	}
	// HTTP requests have their own bound.
	if res, _ := do(t, "GET", px.URL+"/server/ping", nil, nil); res.StatusCode != 200 {
		t.Errorf("HTTP request refused while websockets are full")
	}
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, code := open()
		c.Close()
		if code == 101 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed websocket was never freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
