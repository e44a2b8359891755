package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// newHTTPClient is a keep-alive client whose transport counts requests and
// connections.
func newHTTPClient(maxIdle int) *http.Client {
	return &http.Client{Transport: newCounter(maxIdle), Timeout: 30 * time.Second}
}

// loadRow is one row of the exchange table.
type loadRow struct {
	name  string
	state string // the state backend of an exchange row; "" for a reference
	res   result
	// perOp is the Directus requests per operation (-1: not applicable).
	perOp float64
	// writes is the state writes (transactions) per operation (-1: not
	// applicable).
	writes float64
	// calls is every call of the state per operation: writes, reads,
	// locks (-1: not applicable).
	calls float64
	// ref is the no-op row this row's throughput is compared with (nil:
	// the row is a reference itself).
	ref  *loadRow
	note string
}

// microRow is one verification micro-benchmark per issuer.
type microRow struct {
	name string
	res  map[string]testing.BenchmarkResult // by issuer name
}

// backendRows are the exchange rows measured on one state backend, and
// the no-op reference measured just before them (on a shared, noisy machine
// a reference minutes away says less).
type backendRows struct {
	state                                                  string
	noop, returning, returningNoCache, newClient, rotation *loadRow
}

// exchangeReport holds the rows of the exchange table.
type exchangeReport struct {
	usersMe  *loadRow
	backends []*backendRows
	micro    []microRow
	issuers  []string
}

func (r *exchangeReport) rows() []*loadRow {
	var all []*loadRow
	for _, b := range r.backends {
		all = append(all, b.noop, b.returning, b.returningNoCache, b.newClient, b.rotation)
	}
	all = append(all, r.usersMe)
	var out []*loadRow
	for _, row := range all {
		if row != nil {
			out = append(out, row)
		}
	}
	return out
}

// backendClients are the IdP clients of one state backend's rows: each
// backend gets its own, so that every backend starts from users Directus
// does not hold yet.
type backendClients struct {
	returning, rotating, pool []idpClient
}

// exchangeRows measures the exchange rows, once per state backend of
// cfg.states, and their references against e's Directus. first also runs
// the verification micro-benchmarks (they do not depend on Directus) on the
// first backend's instances.
func exchangeRows(ctx context.Context, stderr io.Writer, cfg config, e *env, first bool) (*exchangeReport, error) {
	rep := &exchangeReport{issuers: []string{"auth0", "supertokens", "eddsa"}}
	conc := cfg.concurrency
	idp := newHTTPClient(8)
	auth0 := e.st.IdP.Issuers["auth0"]
	nNew := min(cfg.newClients, cfg.maxRequests)
	progress(stderr, "%s: registering %d + %d + %d IdP clients for each of %d state backends", e.d.Name, conc, conc, nNew, len(cfg.states))
	t0 := time.Now()
	clients := make([]backendClients, len(cfg.states))
	for i, name := range cfg.states {
		prefix := "bridge-bench-" + e.run + "-" + name
		var err error
		if clients[i].returning, err = registerClients(ctx, idp, "auth0", auth0, prefix+"-ret", conc, 3600, 4); err != nil {
			return rep, err
		}
		// Rotation clients' subject tokens outlive the 1h bridge tokens, so
		// the TTL cap never makes a token reusable.
		if clients[i].rotating, err = registerClients(ctx, idp, "auth0", auth0, prefix+"-rot", conc, 7200, 4); err != nil {
			return rep, err
		}
		if clients[i].pool, err = registerClients(ctx, idp, "auth0", auth0, prefix+"-new", nNew, 3600, 4); err != nil {
			return rep, err
		}
	}
	progress(stderr, "%s: registered in %s", e.d.Name, time.Since(t0).Round(time.Millisecond))

	hc := newHTTPClient(conc)
	defer hc.CloseIdleConnections()

	var refNoop *loadRow // the latest no-op row
	exchangeRow := func(name, stateName string, cl *cluster, op func(ctx context.Context, w, i int) error, maxOps int) *loadRow {
		progress(stderr, "%s: %s, %s state", e.d.Name, name, stateName)
		before, busy, dials := cl.directus()
		sc0 := cl.state.counts()
		res := load(ctx, conc, cfg.duration, maxOps, op)
		reqs, busy1, dials1 := cl.directus()
		sc := cl.state.counts().sub(sc0)
		res.directus = reqs - before
		row := &loadRow{name: name, state: stateName, res: res, perOp: res.perOp(res.directus),
			writes: res.perOp(sc.writes), calls: res.perOp(sc.calls()), ref: refNoop}
		var notes []string
		if res.directus > 0 {
			var total time.Duration
			for _, l := range res.lat {
				total += l
			}
			mean := total / time.Duration(max(1, len(res.lat)))
			notes = append(notes, fmt.Sprintf("mean latency %s, of which waiting for Directus %s; %d new connections to Directus for %d requests",
				ms(mean), ms(time.Duration(busy1-busy)/time.Duration(res.ok+res.failed)), dials1-dials, res.directus))
		}
		if sc.writes > 0 {
			notes = append(notes, fmt.Sprintf("%d state writes of %s each on average", sc.writes, ms(sc.busy/time.Duration(sc.writes))))
		}
		if n := sc.calls() - sc.writes; n > 0 || cl.state.shared() {
			notes = append(notes, fmt.Sprintf("state calls besides writes: %d Lock, %d reads (Read, Load, Meta), %d lease calls",
				sc.locks, sc.reads, sc.leases))
		}
		row.note = strings.Join(notes, "; ")
		return row
	}

	var live []string // the first backend's returning clients' tokens, for GET /users/me
	var microOn, microOff *instance
	for bi, stateName := range cfg.states {
		cs := clients[bi]
		progress(stderr, "%s: opening a fresh %s state", e.d.Name, stateName)
		bs, err := openState(ctx, e, stateName)
		if err != nil {
			return rep, fmt.Errorf("%s state: %w", stateName, err)
		}
		defer bs.close(stderr) // after the instances below have stopped
		br := &backendRows{state: stateName}
		rep.backends = append(rep.backends, br)

		inst, err := newCluster(ctx, e, bs, bridge.TokenConfig{}, 0)
		if err != nil {
			return rep, err
		}
		defer inst.stop()

		// Warm up: the returning clients' first exchange creates their users.
		forms := make([]string, len(cs.returning))
		tokens := make([]string, len(cs.returning))
		var answer []byte
		for i, c := range cs.returning {
			forms[i] = exchangeForm(c.Token)
			e.users = append(e.users, e.userID(c.Subject))
			st, body, err := post(ctx, hc, inst.url(i), forms[i])
			if err := expectOK(st, body, err); err != nil {
				return rep, fmt.Errorf("first exchange of %s: %w", c.ID, err)
			}
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			_ = json.Unmarshal(body, &tok)
			tokens[i], answer = tok.AccessToken, body
		}

		if bi == 0 {
			live = tokens
		}
		// Reference: a no-op handler in the same server stack, same form
		// POST, answering the same bytes as an exchange.
		progress(stderr, "%s: no-op handler, before the %s rows", e.d.Name, stateName)
		noopURL, stopNoop, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write(answer)
		}))
		if err != nil {
			return rep, err
		}
		res := load(ctx, conc, cfg.duration, cfg.maxRequests, func(ctx context.Context, w, _ int) error {
			return expectOK(post(ctx, hc, noopURL+"/oauth/token", forms[w%len(forms)]))
		})
		stopNoop()
		br.noop = &loadRow{name: "no-op handler, same server stack and form POST (reference)", res: res, perOp: -1, writes: -1, calls: -1}
		refNoop = br.noop

		// Request i goes to replica i mod n: on two replicas every
		// client is answered by both in turn.
		reuse := func(cl *cluster) func(ctx context.Context, w, i int) error {
			return func(ctx context.Context, w, i int) error {
				return expectOK(post(ctx, hc, cl.url(i), forms[w%len(forms)]))
			}
		}
		br.returning = exchangeRow("(a) returning client, live token reused", stateName, inst, reuse(inst), cfg.maxRequests)

		instNoCache, err := newCluster(ctx, e, bs, bridge.TokenConfig{}, -1)
		if err != nil {
			return rep, err
		}
		defer instNoCache.stop()
		br.returningNoCache = exchangeRow("(a') returning client, verified-token cache off", stateName, instNoCache, reuse(instNoCache), cfg.maxRequests)
		if bi == 0 {
			microOn, microOff = inst.insts[0], instNoCache.insts[0]
		}

		// (b) new clients, each exchanged once.
		newForms := make([]string, len(cs.pool))
		for i, c := range cs.pool {
			newForms[i] = exchangeForm(c.Token)
		}
		started := make([]bool, len(cs.pool))
		br.newClient = exchangeRow("(b) new client (one exchange each)", stateName, inst, func(ctx context.Context, _, i int) error {
			started[i] = true
			return expectOK(post(ctx, hc, inst.url(i), newForms[i]))
		}, len(cs.pool))
		for i, s := range started {
			if s {
				e.users = append(e.users, e.userID(cs.pool[i].Subject))
			}
		}
		br.newClient.note = fmt.Sprintf("%d of %d registered clients used; %s",
			br.newClient.res.ok+br.newClient.res.failed, len(cs.pool), br.newClient.note)

		// (c) rotation at every exchange: ttl 1h, rotate_before 1h - 1ms.
		instRot, err := newCluster(ctx, e, bs, bridge.TokenConfig{TTL: bridge.Duration(time.Hour),
			RotateBefore: bridge.Duration(time.Hour - time.Millisecond)}, 0)
		if err != nil {
			return rep, err
		}
		defer instRot.stop()
		rotForms := make([]string, len(cs.rotating))
		last := make([]string, len(cs.rotating))
		exchangeToken := func(ctx context.Context, i int, form string) (string, error) {
			st, body, err := post(ctx, hc, instRot.url(i), form)
			if err := expectOK(st, body, err); err != nil {
				return "", err
			}
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			err = json.Unmarshal(body, &tok)
			return tok.AccessToken, err
		}
		for i, c := range cs.rotating {
			rotForms[i] = exchangeForm(c.Token)
			e.users = append(e.users, e.userID(c.Subject))
			if last[i], err = exchangeToken(ctx, i, rotForms[i]); err != nil {
				return rep, fmt.Errorf("first exchange of %s: %w", c.ID, err)
			}
		}
		br.rotation = exchangeRow("(c) rotation at every exchange", stateName, instRot, func(ctx context.Context, w, i int) error {
			tok, err := exchangeToken(ctx, i, rotForms[w])
			if err != nil {
				return err
			}
			if tok == last[w] {
				return errNotRotated
			}
			last[w] = tok
			return nil
		}, cfg.maxRequests)
	}

	// Reference: Directus GET /users/me with the returning clients' tokens.
	progress(stderr, "%s: Directus GET /users/me", e.d.Name)
	dhc := newHTTPClient(conc)
	defer dhc.CloseIdleConnections()
	res := load(ctx, conc, cfg.duration, cfg.maxRequests, func(ctx context.Context, w, _ int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.d.URL+"/users/me", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+live[w%len(live)])
		resp, err := dhc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /users/me: status %d", resp.StatusCode)
		}
		return nil
	})
	res.directus = dhc.Transport.(*counter).reqs.Load()
	rep.usersMe = &loadRow{name: "Directus GET /users/me, static token (reference)", res: res, perOp: res.perOp(res.directus), writes: -1, calls: -1, ref: refNoop}

	if first {
		if err := rep.microBenchmarks(ctx, stderr, cfg, e, idp, microOn, microOff); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// microBenchmarks measures, per issuer, one bare go-oidc verification of a
// subject token against the whole in-process exchange of a returning client
// presenting that token, with the verified-token cache on and off. Each
// runs cfg.rounds times, interleaved; the fastest round counts (the least
// disturbed by anything else on the machine).
func (r *exchangeReport) microBenchmarks(ctx context.Context, stderr io.Writer, cfg config, e *env, idp *http.Client, on, off *instance) error {
	testing.Init()
	if err := flag.Set("test.benchtime", cfg.verifyTime.String()); err != nil {
		return err
	}
	bare := microRow{name: "go-oidc Verify, bare (reference)", res: map[string]testing.BenchmarkResult{}}
	cached := microRow{name: "exchange in-process, returning, cache on", res: map[string]testing.BenchmarkResult{}}
	uncached := microRow{name: "exchange in-process, returning, cache off", res: map[string]testing.BenchmarkResult{}}
	type bench struct {
		row    *microRow
		issuer string
		op     func() error
	}
	var benches []bench
	for _, name := range r.issuers {
		is := e.st.IdP.Issuers[name]
		cs, err := registerClients(ctx, idp, name, is, "bridge-bench-"+e.run+"-verify-"+name, 1, 3600, 1)
		if err != nil {
			return err
		}
		e.users = append(e.users, e.userID(cs[0].Subject))
		tok := cs[0].Token
		ov := oidc.NewVerifier(is.Issuer, oidc.NewRemoteKeySet(ctx, is.JWKSURI),
			&oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{is.Alg}})
		verify := func() error {
			_, err := ov.Verify(ctx, tok)
			return err
		}
		if err := verify(); err != nil { // fetches the keys
			return fmt.Errorf("go-oidc verify %s: %w", name, err)
		}
		benches = append(benches, bench{&bare, name, verify})
		req := bridge.Request{SubjectToken: tok}
		for _, c := range []struct {
			row *microRow
			in  *instance
		}{{&cached, on}, {&uncached, off}} {
			if _, err := c.in.ex.Exchange(ctx, req); err != nil { // creates the user
				return fmt.Errorf("exchange %s: %w", name, err)
			}
			benches = append(benches, bench{c.row, name, func() error {
				res, err := c.in.ex.Exchange(ctx, req)
				if err == nil && res.Outcome != bridge.Reused {
					err = fmt.Errorf("outcome %s, want %s", res.Outcome, bridge.Reused)
				}
				return err
			}})
		}
	}
	for round := range cfg.rounds {
		progress(stderr, "%s: verification micro-benchmarks, round %d of %d", e.d.Name, round+1, cfg.rounds)
		for _, bm := range benches {
			var failure error
			res := testing.Benchmark(func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := bm.op(); err != nil {
						failure = err
						b.FailNow()
					}
				}
			})
			if failure != nil || res.N == 0 {
				return fmt.Errorf("%s, %s: %v", bm.row.name, bm.issuer, failure)
			}
			if prev, ok := bm.row.res[bm.issuer]; !ok || res.NsPerOp() < prev.NsPerOp() {
				bm.row.res[bm.issuer] = res
			}
		}
	}
	r.micro = []microRow{bare, cached, uncached}
	return nil
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

func (r *exchangeReport) print(w io.Writer, cfg config) {
	if len(r.backends) == 0 || r.backends[0].noop == nil {
		return
	}
	fmt.Fprintf(w, "\n### Exchanges (%d concurrent clients, %s per row)\n\n", cfg.concurrency, cfg.duration)
	fmt.Fprintln(w, "| row | state | requests | per second | p50 | p99 | Directus requests each | state writes each | state calls each | throughput vs no-op | CPU per request (this process) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, row := range r.rows() {
		res := row.res
		per := "-"
		if row.perOp >= 0 {
			per = fmt.Sprintf("%.2f", row.perOp)
		}
		ratio := "1.00×"
		if row.ref != nil && row.ref.res.rate() > 0 {
			x := res.rate() / row.ref.res.rate()
			ratio = fmt.Sprintf("%.2f×", x)
			if x < 0.1 {
				ratio = fmt.Sprintf("%.4f×", x)
			}
		}
		writes, calls := "-", "-"
		if row.writes >= 0 {
			writes = fmt.Sprintf("%.2f", row.writes)
		}
		if row.calls >= 0 {
			calls = fmt.Sprintf("%.2f", row.calls)
		}
		state := "-"
		if row.state != "" {
			state = row.state
		}
		cpu := "-"
		if res.ok > 0 {
			cpu = fmt.Sprintf("%d µs", res.cpu.Microseconds()/int64(res.ok+res.failed))
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
			row.name, state, res.ok, res.rate(), ms(res.pct(0.50)), ms(res.pct(0.99)), per, writes, calls, ratio, cpu)
	}
	for _, row := range r.rows() {
		name := row.name
		if row.state != "" {
			name += " (" + row.state + ")"
		}
		if row.res.failed > 0 {
			fmt.Fprintf(w, "\n%s: %d requests failed, first: %v", name, row.res.failed, row.res.firstErr)
		}
		if row.note != "" {
			fmt.Fprintf(w, "\n%s: %s", name, row.note)
		}
	}
	fmt.Fprintln(w)
	if len(r.micro) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Verification (one goroutine, ns per operation)\n\n")
	fmt.Fprint(w, "| operation |")
	for _, name := range r.issuers {
		fmt.Fprintf(w, " %s (%s) | vs bare |", name, algOf(name))
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "|---|")
	for range r.issuers {
		fmt.Fprint(w, "---:|---:|")
	}
	fmt.Fprintln(w)
	bare := r.micro[0]
	for _, m := range r.micro {
		fmt.Fprintf(w, "| %s |", m.name)
		for _, name := range r.issuers {
			res := m.res[name]
			ratio := float64(res.NsPerOp()) / float64(max(1, bare.res[name].NsPerOp()))
			fmt.Fprintf(w, " %s, %d allocs | %.3f× |", nsString(res.NsPerOp()), res.AllocsPerOp(), ratio)
		}
		fmt.Fprintln(w)
	}
}

func algOf(issuer string) string {
	return map[string]string{"auth0": "RS256", "supertokens": "ES256", "eddsa": "EdDSA"}[issuer]
}

func nsString(ns int64) string {
	if ns >= 10000 {
		return fmt.Sprintf("%.1f µs", float64(ns)/1000)
	}
	return fmt.Sprintf("%d ns", ns)
}

func (r *exchangeReport) verdicts() []verdict {
	var out []verdict
	if r == nil {
		return out
	}
	for _, b := range r.backends {
		ret := b.returning
		if ret == nil || b.noop == nil {
			continue
		}
		noop := b.noop.res.rate()
		on := " (" + b.state + " state)"
		out = append(out,
			verdict{ok: ret.perOp == 0 && ret.res.ok > 0, what: "returning client" + on + ": 0 Directus requests",
				got: fmt.Sprintf("%.3f per exchange (%d over %d exchanges)", ret.perOp, ret.res.directus, ret.res.ok)},
			verdict{ok: ret.writes == 0 && ret.res.ok > 0, what: "returning client" + on + ": 0 state writes",
				got: fmt.Sprintf("%.3f per exchange", ret.writes)},
			// On a shared state: the fast path answers from memory while
			// the change feed is coherent, without a database round trip.
			verdict{ok: ret.calls == 0 && ret.res.ok > 0, what: "returning client" + on + ": 0 state calls (no database round trip)",
				got: fmt.Sprintf("%.3f per exchange", ret.calls)},
			verdict{ok: ret.res.rate() >= noop/2, what: "returning client" + on + ": at least 0.5× the no-op throughput",
				got:  fmt.Sprintf("%.0f/s = %.2f× of %.0f/s", ret.res.rate(), ret.res.rate()/noop, noop),
				miss: fmt.Sprintf("%.0f/s short of %.0f/s", noop/2-ret.res.rate(), noop/2)},
			verdict{ok: ret.res.pct(0.99) < 5*time.Millisecond && ret.res.ok > 0, what: "returning client" + on + ": p99 under 5 ms",
				got: ms(ret.res.pct(0.99)), miss: ms(ret.res.pct(0.99)-5*time.Millisecond) + " over"},
		)
		if nc := b.newClient; nc != nil {
			out = append(out, verdict{ok: nc.perOp <= 2 && nc.res.ok > 0, what: "new client" + on + ": at most 2 Directus requests",
				got:  fmt.Sprintf("%.2f per exchange", nc.perOp),
				miss: fmt.Sprintf("%.2f over", nc.perOp-2)})
		}
		if rot := b.rotation; rot != nil {
			out = append(out, verdict{ok: rot.perOp <= 1 && rot.res.ok > 0 && rot.res.failed == 0,
				what: "rotation" + on + ": 1 Directus request", got: fmt.Sprintf("%.2f per exchange, %d failed", rot.perOp, rot.res.failed),
				miss: fmt.Sprintf("%.2f over", rot.perOp-1)})
		}
	}
	if len(r.micro) == 3 {
		bare, cached := r.micro[0].res["auth0"], r.micro[1].res["auth0"]
		out = append(out, verdict{ok: cached.NsPerOp() < bare.NsPerOp(), what: "repeated subject token does not pay full verification again",
			got: fmt.Sprintf("cached in-process exchange %s vs bare go-oidc verify %s (RS256), %.3f×",
				nsString(cached.NsPerOp()), nsString(bare.NsPerOp()), float64(cached.NsPerOp())/float64(max(1, bare.NsPerOp())))})
	}
	return out
}
