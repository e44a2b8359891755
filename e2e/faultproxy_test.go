package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// faultMode is what the fault proxy does to the request it is armed for.
type faultMode int

const (
	// faultRefuse answers 503 without forwarding: Directus never sees the
	// request.
	faultRefuse faultMode = iota + 1
	// faultLoseAnswer forwards the request, lets Directus apply it, and
	// answers 502 to the caller: the answer is lost after the write.
	faultLoseAnswer
)

func (m faultMode) String() string {
	switch m {
	case faultRefuse:
		return "refused"
	case faultLoseAnswer:
		return "answer lost"
	}
	return "forwarded"
}

// proxied is one request that reached the fault proxy.
type proxied struct {
	Method, Path string
	// Status is what Directus answered; 0 when the request was not
	// forwarded (or the upstream could not be reached).
	Status int
	Fault  faultMode // 0 when the request was passed through untouched
}

func (p proxied) String() string {
	return fmt.Sprintf("%s %s -> %d (%s)", p.Method, p.Path, p.Status, p.Fault)
}

// write reports whether the request asks Directus to change something.
func (p proxied) write() bool {
	return p.Method == http.MethodPost || p.Method == http.MethodPatch || p.Method == http.MethodDelete
}

type fault struct {
	method, prefix string
	mode           faultMode
}

// faultProxy is a reverse proxy in front of a real Directus that forwards
// everything until a test arms it to fail the next request matching a method
// and a path prefix. It records every request it saw.
type faultProxy struct {
	URL      string
	upstream http.RoundTripper

	mu    sync.Mutex
	armed []fault
	seen  []proxied
}

// newFaultProxy starts a fault proxy on 127.0.0.1 in front of target; it
// stops when the test ends.
func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	p := &faultProxy{upstream: transport}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u) },
		Transport: p,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "fault proxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		transport.CloseIdleConnections()
	})
	p.URL = "http://" + l.Addr().String()
	return p
}

// arm makes the next request with method whose path starts with prefix
// fail in mode, once. Faults armed together act in the order they were armed.
func (p *faultProxy) arm(method, prefix string, mode faultMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = append(p.armed, fault{method: method, prefix: prefix, mode: mode})
}

// armedLeft is how many armed faults no request has triggered yet.
func (p *faultProxy) armedLeft() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.armed)
}

// disarm drops the faults no request has triggered.
func (p *faultProxy) disarm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = nil
}

// requests returns what the proxy saw, in order.
func (p *faultProxy) requests() []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxied(nil), p.seen...)
}

// forwarded counts the requests with method and a path starting with prefix
// that reached Directus ("" matches every method).
func (p *faultProxy) forwarded(method, prefix string) int {
	n := 0
	for _, r := range p.requests() {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, prefix) && r.Status != 0 {
			n++
		}
	}
	return n
}

// writesSince returns the write requests (POST, PATCH, DELETE) among the
// requests seen after the first n.
func (p *faultProxy) writesSince(n int) []proxied {
	var out []proxied
	for _, r := range p.requests()[n:] {
		if r.write() {
			out = append(out, r)
		}
	}
	return out
}

func (p *faultProxy) take(method, path string) faultMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.armed {
		if f.method == method && strings.HasPrefix(path, f.prefix) {
			p.armed = append(p.armed[:i], p.armed[i+1:]...)
			return f.mode
		}
	}
	return 0
}

func (p *faultProxy) record(r proxied) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, r)
}

// RoundTrip applies the armed fault, if any, around the real round trip.
func (p *faultProxy) RoundTrip(req *http.Request) (*http.Response, error) {
	mode := p.take(req.Method, req.URL.Path)
	seen := proxied{Method: req.Method, Path: req.URL.Path, Fault: mode}
	if mode == faultRefuse {
		p.record(seen)
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return synthetic(req, http.StatusServiceUnavailable, "application/json",
			`{"errors":[{"message":"fault proxy: refused","extensions":{"code":"SERVICE_UNAVAILABLE"}}]}`), nil
	}
	resp, err := p.upstream.RoundTrip(req)
	if err != nil {
		p.record(seen)
		return nil, err
	}
	seen.Status = resp.StatusCode
	if mode == faultLoseAnswer {
		// Read the whole answer: Directus has applied the request.
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		p.record(seen)
		return synthetic(req, http.StatusBadGateway, "text/plain", "502 Bad Gateway"), nil
	}
	p.record(seen)
	return resp, nil
}

func synthetic(req *http.Request, status int, contentType, body string) *http.Response {
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {contentType}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}
}

// TestFaultProxy checks the proxy itself against an upstream that counts
// what it applied.
func TestFaultProxy(t *testing.T) {
	var mu sync.Mutex
	applied := map[string]int{} // "METHOD path" -> requests the upstream received
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		applied[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":{"path":%q,"query":%q,"body":%q,"auth":%q}}`, r.URL.Path, r.URL.RawQuery, body, r.Header.Get("Authorization"))
	}))
	t.Cleanup(upstream.Close)
	appliedCount := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return applied[key]
	}
	p := newFaultProxy(t, upstream.URL)

	send := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, p.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer admin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("ForwardsByDefault", func(t *testing.T) {
		st, body := send("GET", "/users?fields=id", "")
		want := `{"data":{"path":"/users","query":"fields=id","body":"","auth":"Bearer admin"}}`
		if st != 200 || body != want {
			t.Errorf("GET through the proxy: %d %s, want 200 %s", st, body, want)
		}
		if got := appliedCount("GET /users"); got != 1 {
			t.Errorf("upstream received %d GET /users, want 1", got)
		}
		if got := p.forwarded("GET", "/users"); got != 1 {
			t.Errorf("forwarded(GET /users) = %d, want 1", got)
		}
	})

	t.Run("RefuseDoesNotForward", func(t *testing.T) {
		p.arm("PATCH", "/users/", faultRefuse)
		// Neither another method nor another path triggers the fault.
		if st, _ := send("GET", "/users/u1", ""); st != 200 {
			t.Errorf("GET /users/u1 with a PATCH armed: %d, want 200", st)
		}
		if st, _ := send("PATCH", "/users", `{"keys":[]}`); st != 200 {
			t.Errorf("PATCH /users with PATCH /users/ armed: %d, want 200", st)
		}
		st, body := send("PATCH", "/users/u1", `{"role":"r"}`)
		if st != 503 || !strings.Contains(body, "SERVICE_UNAVAILABLE") {
			t.Errorf("armed PATCH: %d %s, want 503 SERVICE_UNAVAILABLE", st, body)
		}
		if got := appliedCount("PATCH /users/u1"); got != 0 {
			t.Errorf("the refused PATCH reached the upstream %d times", got)
		}
		if p.armedLeft() != 0 {
			t.Errorf("the fault is still armed after it acted")
		}
		// A fault acts once.
		if st, _ := send("PATCH", "/users/u1", `{"role":"r"}`); st != 200 || appliedCount("PATCH /users/u1") != 1 {
			t.Errorf("PATCH after the fault: %d, upstream received %d; want 200 and 1", st, appliedCount("PATCH /users/u1"))
		}
	})

	t.Run("LoseAnswerForwardsThenFails", func(t *testing.T) {
		p.arm("POST", "/users", faultLoseAnswer)
		st, body := send("POST", "/users", `{"id":"u2"}`)
		if st != 502 || strings.Contains(body, "u2") {
			t.Errorf("armed POST: %d %s, want 502 without the upstream's answer", st, body)
		}
		if got := appliedCount("POST /users"); got != 1 {
			t.Errorf("upstream received %d POST /users, want 1 (applied before the answer was lost)", got)
		}
		if st, _ := send("POST", "/users", `{"id":"u3"}`); st != 200 {
			t.Errorf("POST after the fault: %d, want 200", st)
		}
	})

	t.Run("Records", func(t *testing.T) {
		want := []proxied{
			{"GET", "/users", 200, 0},
			{"GET", "/users/u1", 200, 0},
			{"PATCH", "/users", 200, 0},
			{"PATCH", "/users/u1", 0, faultRefuse},
			{"PATCH", "/users/u1", 200, 0},
			{"POST", "/users", 200, faultLoseAnswer},
			{"POST", "/users", 200, 0},
		}
		got := p.requests()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests:\n got %v\nwant %v", got, want)
		}
		if got := len(p.writesSince(1)); got != 5 {
			t.Errorf("writesSince(1) = %d, want 5", got)
		}
		if got := p.forwarded("PATCH", "/users/"); got != 1 {
			t.Errorf("forwarded(PATCH /users/) = %d, want 1 (the refused one was not forwarded)", got)
		}
		if got := p.forwarded("", "/"); got != 6 {
			t.Errorf("forwarded(any) = %d, want 6", got)
		}
		p.arm("DELETE", "/users", faultRefuse)
		p.disarm()
		if p.armedLeft() != 0 {
			t.Errorf("disarm left %d faults", p.armedLeft())
		}
	})
}
