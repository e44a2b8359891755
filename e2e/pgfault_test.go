package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
	"github.com/directus-bridge/directus-bridge/directus"
)

// tcpFault is what the TCP proxy does to new connections while it is cut.
type tcpFault int

const (
	// tcpRefuse closes the listener: a new connection is refused.
	tcpRefuse tcpFault = iota + 1
	// tcpBlackHole accepts a new connection and never forwards a byte.
	tcpBlackHole
)

func (f tcpFault) String() string {
	if f == tcpRefuse {
		return "Refused"
	}
	return "BlackHoled"
}

// tcpProxy forwards TCP connections from 127.0.0.1 to one upstream until a
// test cuts it: then it closes every open connection, both sides, and
// refuses or black-holes new ones until it is restored.
type tcpProxy struct {
	t        *testing.T
	addr     string // host:port the proxy listens on, the same after a restore
	upstream string

	mu       sync.Mutex
	l        net.Listener // nil while the proxy refuses
	cut      tcpFault     // 0 while it forwards
	conns    map[net.Conn]struct{}
	accepted int // connections the proxy accepted, in every mode
}

// newTCPProxy starts a proxy to upstream; it stops when the test ends.
func newTCPProxy(t *testing.T, upstream string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, addr: l.Addr().String(), upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.serve(l)
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.l != nil {
			p.l.Close()
			p.l = nil
		}
		p.closeAll()
	})
	return p
}

func (p *tcpProxy) serve(l net.Listener) {
	p.l = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // the listener was closed
			}
			p.handle(c)
		}
	}()
}

// handle forwards c, or holds it without forwarding while black-holed.
func (p *tcpProxy) handle(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.accepted++
	p.conns[c] = struct{}{}
	if p.cut != 0 {
		// Black hole: read and drop whatever comes, answer nothing.
		go func() { _, _ = io.Copy(io.Discard, c) }()
		return
	}
	go func() {
		up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			c.Close()
			return
		}
		p.mu.Lock()
		if p.cut != 0 {
			// Cut while dialling.
			p.mu.Unlock()
			up.Close()
			c.Close()
			return
		}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}()
}

// closeAll closes every connection the proxy holds; p.mu is held.
func (p *tcpProxy) closeAll() {
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// cutOff closes every open connection and refuses or black-holes new ones.
func (p *tcpProxy) cutOff(f tcpFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = f
	if f == tcpRefuse {
		p.l.Close()
		p.l = nil
	}
	p.closeAll()
}

// restore forwards again, on the same address; the connections held in the
// black hole are closed.
func (p *tcpProxy) restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l == nil {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			p.t.Fatalf("listen again on %s: %v", p.addr, err)
		}
		p.serve(l)
	}
	p.cut = 0
	p.closeAll()
}

// acceptedCount is how many connections reached the proxy.
func (p *tcpProxy) acceptedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// viaProxy returns dsn with its host:port replaced by the proxy's.
func (p *tcpProxy) viaProxy(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal("the DSN is not a URL")
	}
	u.Host = p.addr
	return u.String()
}

// timedExchange is p.exchange bounded by a deadline, with its duration.
func timedExchange(t *testing.T, p *process, subject string, limit time.Duration) (exchanged, time.Duration) {
	t.Helper()
	type result struct {
		r exchanged
		d time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r, err := postExchange(p.url, subject, limit)
		if err != nil {
			r = exchanged{status: -1, body: map[string]any{"transport_error": err.Error()}}
		}
		done <- result{r, time.Since(start)}
	}()
	select {
	case res := <-done:
		return res.r, res.d
	case <-time.After(limit + time.Second):
		t.Fatalf("the exchange did not answer within %s:\n%s", limit, p.logs.String())
		return exchanged{}, 0
	}
}

// postExchange sends one exchange with a client bounded by limit.
func postExchange(base, subject string, limit time.Duration) (exchanged, error) {
	b := &bridgeUnderTest{url: base}
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
	}
	c := &http.Client{Timeout: limit}
	resp, err := c.PostForm(b.url+"/oauth/token", form)
	if err != nil {
		return exchanged{}, err
	}
	defer resp.Body.Close()
	out := exchanged{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if err := json.NewDecoder(resp.Body).Decode(&out.body); err != nil {
		return out, fmt.Errorf("the answer is not JSON: %w", err)
	}
	return out, nil
}

// stateRecords counts the records of user in the schema's records table,
// read straight from PostgreSQL (not through the proxy).
func stateRecords(t *testing.T, dsn, schema, user string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.directus_bridge_records WHERE key = $1`, user).Scan(&n); err != nil {
		t.Fatalf("read the records of %s: %v", user, err)
	}
	return n
}

// TestPGFault: the state's PostgreSQL goes away under a serving bridge
// (connections closed, new ones refused or black-holed). A new client's
// exchange answers 503 with Retry-After and writes nothing to Directus,
// a client with a live token still gets it; once PostgreSQL is back the
// same bridge, not restarted, serves the new client and records it, and
// nothing recorded before is lost across a restart.
func TestPGFault(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		for _, fault := range []tcpFault{tcpRefuse, tcpBlackHole} {
			t.Run(fault.String(), func(t *testing.T) { testPGFault(t, d, f, base, fault) })
		}
	})
}

func testPGFault(t *testing.T, d DirectusInstance, f *fixture, base *pgstatetest.Schemas, fault tcpFault) {
	ctx := context.Background()
	auth0 := stack.IdP.Issuers["auth0"]
	direct, schema := base.FreshSchema(t)
	du, _ := url.Parse(direct)
	password, _ := du.User.Password()
	if password == "" {
		t.Fatal("the stack's DSN has no password: the check that none is logged would prove nothing")
	}
	proxy := newTCPProxy(t, du.Host)
	key := make([]byte, 32)
	rand.Read(key)
	t.Setenv("DIRECTUS_BRIDGE_STATE_DSN", proxy.viaProxy(t, direct))
	t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", base64.StdEncoding.EncodeToString(key))
	port := freePort(t)
	c := binaryConfig(d, port, "", "10m", fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name))
	config := strings.Replace(c, `state: {path: ""}`, `state: {driver: postgres}`, 1)
	if config == c {
		t.Fatal("binaryConfig has no state line to replace")
	}
	var procs []*process
	start := func() *process {
		t.Helper()
		p := startBinary(t, d, config, port)
		select {
		case err := <-p.done:
			t.Fatalf("bridge exited: %v\n%s", err, p.logs.String())
		default:
		}
		procs = append(procs, p)
		return p
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if strings.Contains(p.logs.String(), password) {
				t.Errorf("the DSN's password reached the bridge's output:\n%s", p.logs.String())
			}
		}
	})
	// The bound of one answer: the state's operation timeout (10s) plus
	// Directus's (5s) and slack.
	const limit = 25 * time.Second
	// The bound of a refusal for want of the state: one state operation
	// (10s) and slack.
	const stateBound = 12 * time.Second

	p := start()
	if proxy.acceptedCount() == 0 {
		t.Fatal("the bridge did not connect through the proxy: the cut would prove nothing")
	}
	oldID, oldSecret := auth0.registerClient(t, "", "items:read", 600)
	oldSubject := auth0.token(t, oldID, oldSecret, "", "")
	first, _ := timedExchange(t, p, oldSubject, limit)
	if first.status != 200 || first.token() == "" {
		t.Fatalf("first client's exchange: %d %v", first.status, first.body)
	}
	oldUser := userID(oldID + "@clients")

	newID, newSecret := auth0.registerClient(t, "", "items:read", 600)
	newSubject := auth0.token(t, newID, newSecret, "", "")
	newUser := userID(newID + "@clients")

	// 1. PostgreSQL goes away.
	proxy.cutOff(fault)
	refused, took := timedExchange(t, p, newSubject, limit)
	t.Logf("%s: the new client's exchange answered %d in %s", fault, refused.status, took.Round(time.Millisecond))
	if refused.status != 503 || refused.retryAfter == "" || refused.code() != "temporarily_unavailable" {
		t.Fatalf("new client's exchange with the state cut: %d Retry-After=%q %v, want 503 temporarily_unavailable with Retry-After\n%s",
			refused.status, refused.retryAfter, refused.body, p.logs.String())
	}
	// The refusal is the state's ("could not record"), not Directus's.
	recordFailed := func(r exchanged) bool {
		desc, _ := r.body["error_description"].(string)
		return strings.Contains(desc, "could not record")
	}
	if !recordFailed(refused) {
		t.Errorf("the 503 does not say the exchange could not be recorded: %v", refused.body)
	}
	// The exchange's log line may follow its answer: wait for it.
	p.waitLog(t, "the connection broke")
	// A second try, now on the reconnection path (the first found the
	// connection broken): still a bounded 503.
	again, took2 := timedExchange(t, p, newSubject, limit)
	t.Logf("%s: the new client's second exchange answered %d in %s", fault, again.status, took2.Round(time.Millisecond))
	if took > stateBound || took2 > stateBound {
		t.Errorf("a refusal took longer than one state operation's bound %s", stateBound)
	}
	if again.status != 503 || again.retryAfter == "" || again.code() != "temporarily_unavailable" {
		t.Fatalf("new client's second exchange with the state cut: %d Retry-After=%q %v", again.status, again.retryAfter, again.body)
	}
	if !recordFailed(again) {
		t.Errorf("the second 503 does not say the exchange could not be recorded: %v", again.body)
	}
	// Several new clients at once: each answer is bounded by one state
	// operation's timeout, not by the sum of the ones queued before it.
	const crowd = 3
	type answer struct {
		r exchanged
		d time.Duration
	}
	answers := make([]answer, crowd)
	var crowdUsers []string
	var wg sync.WaitGroup
	for i := range crowd {
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		subject := auth0.token(t, id, secret, "", "")
		crowdUsers = append(crowdUsers, userID(id+"@clients"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r, err := postExchange(p.url, subject, 2*limit)
			if err != nil {
				r = exchanged{status: -1, body: map[string]any{"transport_error": err.Error()}}
			}
			answers[i] = answer{r, time.Since(start)}
		}()
	}
	wg.Wait()
	for i, a := range answers {
		t.Logf("%s: concurrent new client %d answered %d in %s", fault, i, a.r.status, a.d.Round(time.Millisecond))
		if a.r.status != 503 || a.r.retryAfter == "" || a.r.code() != "temporarily_unavailable" || !recordFailed(a.r) {
			t.Errorf("concurrent new client %d with the state cut: %d Retry-After=%q %v", i, a.r.status, a.r.retryAfter, a.r.body)
		}
		if a.d > stateBound {
			t.Errorf("concurrent new client %d with the state cut answered after %s, more than one state operation's bound %s", i, a.d.Round(time.Millisecond), stateBound)
		}
	}
	for _, u := range crowdUsers {
		if st := raw(t, d, d.AdminToken, "GET", "/users/"+u, nil, nil); st != 403 && st != 404 {
			t.Errorf("a concurrent new client's user with the state cut: GET /users/%s %d, want absent", u, st)
		}
	}
	// Nothing of the new client reached Directus.
	if st := raw(t, d, d.AdminToken, "GET", "/users/"+newUser, nil, nil); st != 403 && st != 404 {
		t.Fatalf("the new client's user with the state cut: GET /users/%s %d, want absent (403 or 404)", newUser, st)
	}
	if acts, err := f.admin.Activity(ctx, directus.ActivityFilter{Item: newUser}, 100); err != nil || len(acts) != 0 {
		t.Fatalf("Directus activity of the new client with the state cut: %d rows, %v; want none", len(acts), err)
	}
	// The hot path needs no state write: the first client's live token.
	hot, tookHot := timedExchange(t, p, oldSubject, limit)
	t.Logf("%s: the first client's exchange answered %d in %s", fault, hot.status, tookHot.Round(time.Millisecond))
	if hot.status != 200 || hot.token() != first.token() {
		t.Fatalf("first client's exchange with the state cut: %d %v, same token %v", hot.status, hot.body, hot.token() == first.token())
	}

	// 2. PostgreSQL is back: the same process serves the new client.
	proxy.restore()
	restored := time.Now()
	ok, took3 := timedExchange(t, p, newSubject, limit)
	t.Logf("%s: after the restore the new client's exchange answered %d in %s", fault, ok.status, took3.Round(time.Millisecond))
	if ok.status != 200 || ok.token() == "" {
		t.Fatalf("new client's exchange after the restore: %d %v\n%s", ok.status, ok.body, p.logs.String())
	}
	t.Logf("%s: recovered %s after the restore", fault, time.Since(restored).Round(time.Millisecond))
	if u, err := f.admin.User(ctx, newUser); err != nil || u.Role != f.reader.ID {
		t.Fatalf("the new client's user in Directus: %+v %v", u, err)
	}
	if st := f.status(t, ok.token()); st != 200 {
		t.Fatalf("the new client's token against Directus: GET /users/me %d", st)
	}
	if n := stateRecords(t, direct, schema, newUser); n != 1 {
		t.Fatalf("the new client's records in PostgreSQL: %d, want 1", n)
	}

	// 3. Nothing lost.
	if n := stateRecords(t, direct, schema, oldUser); n != 1 {
		t.Fatalf("the first client's records in PostgreSQL: %d, want 1", n)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, p.logs.String())
		}
		p.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop within 30s of SIGTERM:\n%s", p.logs.String())
	}
	p = start()
	for _, c := range []struct {
		name    string
		subject string
		want    string
	}{{"first", oldSubject, first.token()}, {"new", newSubject, ok.token()}} {
		r, _ := timedExchange(t, p, c.subject, limit)
		if r.status != 200 || r.token() != c.want {
			t.Fatalf("%s client's exchange after the restart: %d %v, same token %v", c.name, r.status, r.body, r.token() == c.want)
		}
	}
}
