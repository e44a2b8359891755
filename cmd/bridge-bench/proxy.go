package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// The proxy-mode table: what a machine client gets from Directus through
// the bridge's proxy with its IdP token, against the same client going to
// Directus directly with the machine user's static token (the limit: the
// proxy can only add to it), on every Directus of stack.json. The real
// binary runs `serve` with proxy.listen on a loopback port (JSON logs at
// info to a file, rate limits off, the reconciler off) and a rule mapping
// the IdP scope to a role whose policy reads one small collection. One IdP
// client (client credentials at the stack's auth0 issuer) sends GET
// /items/<collection>: through the proxy with its IdP token, and directly
// with the static token that one RFC 8693 exchange at the same bridge
// returns (the bridge hands out the same live token to both). The two
// sides take turns in slices (-proxy-slice) within each of -proxy-rounds
// rounds, as in the real-binary table, so that the machine's load falls on
// both. On Directus 11, when stack.json has the hook extension, a third
// side takes its turn in the same slices: the hook installed into that
// Directus for these rows (hook.go), a second IdP client sending its IdP
// token straight to Directus. Where the hook cannot be installed, the
// figure docs/performance.md gives (measured earlier on Directus 11, not in
// this run) stands in for it, and the output says so.

// hookFigure is the hook extension's throughput measured earlier, with the
// static-token throughput measured beside it then.
type hookFigure struct {
	low, high             float64 // requests/s through the hook
	directLow, directHigh float64 // requests/s with a static token, same run
	where                 string
	why                   string // why the hook was not measured in this run, when known
}

// hookMeasured is the figure in docs/performance.md ("Compared with a hook
// extension"): Directus 11.17.4 on SQLite, 2 cores, 8 concurrent clients,
// a machine client reading a collection. On Directus 12 Core the common hook
// fails every request (it sets a custom provider), so there is no figure.
var hookMeasured = hookFigure{low: 129, high: 163, directLow: 290, directHigh: 375,
	where: "Directus 11.17.4 on SQLite, 2 cores, 8 clients, reading a collection"}

// hookFor is the hook figure comparable with Directus version v, or nil.
func hookFor(version string) *hookFigure {
	if strings.HasPrefix(version, "11.") {
		return &hookMeasured
	}
	return nil
}

// proxyItems is the number of items of the collection the rows read.
const proxyItems = 10

// proxyRound is one round: the sides alternated in slices.
type proxyRound struct {
	direct, proxy result
	hook          result // the hook extension, when installed (no requests otherwise)
	// bridgeCPU is the bridge process's CPU time during the proxy slices.
	bridgeCPU time.Duration
}

// proxyReport holds the proxy-mode rows of one Directus.
type proxyReport struct {
	directus   string // e.g. "Directus 11.17.4 (sqlite)"
	collection string
	answer     int // bytes of the collection's answer
	rounds     []proxyRound
	// noop are the rounds with the proxy's upstream a no-op server (the
	// direct side goes to the no-op too): the proxy's own cost.
	noop        []proxyRound
	noopLog     logStats
	noopStopped string
	idleCPU     float64     // the bridge's CPU seconds per second with no request, before the no-op rows
	hook        *hookFigure // the earlier figure, when the hook was not measured
	hookWhy     string      // why the hook was not measured, when it was not
	hookRemoved string      // how removing the hook went: "" when never installed
	hookToken   string      // the hook row's IdP token
	hookUser    string      // the Directus user the hook made
	// hookBefore is what Directus answered the hook row's token before the
	// hook was installed (it must refuse it).
	hookBefore    string
	hookUserSeen  string // the hook's user after the rows, as Directus holds it
	uninstallHook func() error
	log           logStats
	stopped       string
	profiled      string
	// profiledNoop is the profile of an extra row in front of the no-op.
	profiledNoop string
	swaps        float64 // swaps the bridge counted during the counted rows (its exchange metrics), -1 unknown
	upstream     float64 // its own Directus requests then (its metrics; not the proxied ones)
}

// proxyMeasure is what the goals are judged on.
type proxyMeasure struct {
	directRate, proxyRate float64       // requests/s over all rounds
	ratios                []float64     // proxy / direct of each round, sorted
	directP99, proxyP99   time.Duration // over all rounds
	failed                int           // failed requests, both sides
	secrets               bool          // a token reached the bridge's log
	// The hook row, when measured in the same rounds.
	hookRate   float64
	hookRatios []float64 // proxy / hook of each round, sorted
	hookFailed int
}

// total merges the rounds of each side; latencies sorted.
func total(rounds []proxyRound) (direct, proxy result) {
	for _, rd := range rounds {
		direct.merge(rd.direct)
		proxy.merge(rd.proxy)
	}
	slices.Sort(direct.lat)
	slices.Sort(proxy.lat)
	return direct, proxy
}

func measure(rounds []proxyRound, log logStats) proxyMeasure {
	d, p := total(rounds)
	m := proxyMeasure{directRate: d.rate(), proxyRate: p.rate(), directP99: d.pct(0.99), proxyP99: p.pct(0.99),
		failed: d.failed + p.failed, secrets: log.secrets}
	var h result
	for _, rd := range rounds {
		if rd.direct.rate() > 0 {
			m.ratios = append(m.ratios, rd.proxy.rate()/rd.direct.rate())
		}
		if rd.hook.ok+rd.hook.failed > 0 {
			if rd.hook.rate() > 0 {
				m.hookRatios = append(m.hookRatios, rd.proxy.rate()/rd.hook.rate())
			}
			h.merge(rd.hook)
		}
	}
	slices.Sort(m.ratios)
	slices.Sort(m.hookRatios)
	m.hookRate, m.hookFailed = h.rate(), h.failed
	return m
}

// hookMeasuredIn says whether rounds have a hook row.
func hookMeasuredIn(rounds []proxyRound) bool {
	for _, rd := range rounds {
		if rd.hook.ok+rd.hook.failed > 0 {
			return true
		}
	}
	return false
}

// Goals of proxy mode, as the product owner set them.
const (
	proxyMinRatio     = 0.9                  // proxy throughput / direct, at least
	proxyMaxP99Added  = 2 * time.Millisecond // proxy p99 - direct p99, under
	proxyMinHookRatio = 2.0                  // proxy throughput / the hook's, at least
)

// proxyVerdicts judges m against the goals: the median of the rounds'
// throughput ratios (a noisy round does not decide), the p99 added over all
// rounds (more samples than one round has), and against the hook: the
// median of the rounds' proxy / hook ratios when the hook was measured in
// the same rounds, else the earlier figure's upper end (the hook at its
// best), when there is one. name says which Directus.
func proxyVerdicts(name string, m proxyMeasure, own *proxyMeasure, hook *hookFigure) []verdict {
	var out []verdict
	if len(m.ratios) == 0 {
		return []verdict{{what: name + " proxy: measured", got: "no round measured"}}
	}
	med := median(m.ratios)
	out = append(out, verdict{ok: med >= proxyMinRatio,
		what: fmt.Sprintf("%s proxy: at least %.1f× direct with a static token (median of rounds)", name, proxyMinRatio),
		got:  fmt.Sprintf("median %.2f× (min %.2f×, max %.2f×, %d rounds; %.0f vs %.0f req/s over all)", med, m.ratios[0], m.ratios[len(m.ratios)-1], len(m.ratios), m.proxyRate, m.directRate),
		miss: fmt.Sprintf("%.2f short", proxyMinRatio-med)})
	added := m.proxyP99 - m.directP99
	out = append(out, verdict{ok: added < proxyMaxP99Added,
		what: fmt.Sprintf("%s proxy: p99 added under %s (all rounds)", name, ms(proxyMaxP99Added)),
		got:  fmt.Sprintf("%s (p99 %s through the proxy, %s direct)", signedMs(added), ms(m.proxyP99), ms(m.directP99)),
		miss: fmt.Sprintf("%s over", ms(added-proxyMaxP99Added))})
	if own != nil {
		added := own.proxyP99 - own.directP99
		out = append(out, verdict{ok: added < proxyMaxP99Added,
			what: fmt.Sprintf("%s proxy: p99 added under %s against a no-op upstream (the proxy's own tail, all rounds)", name, ms(proxyMaxP99Added)),
			got:  fmt.Sprintf("%s (p99 %s through the proxy, %s direct to the no-op)", signedMs(added), ms(own.proxyP99), ms(own.directP99)),
			miss: fmt.Sprintf("%s over", ms(added-proxyMaxP99Added))})
		m.failed += own.failed
		m.secrets = m.secrets || own.secrets
	}
	switch {
	case len(m.hookRatios) > 0:
		med := median(m.hookRatios)
		out = append(out, verdict{ok: med >= proxyMinHookRatio && m.hookFailed == 0,
			what: fmt.Sprintf("%s proxy: at least %.0f× the hook extension, measured in the same rounds (median of rounds)", name, proxyMinHookRatio),
			got: fmt.Sprintf("median %.2f× (min %.2f×, max %.2f×, %d rounds; %.0f vs %.0f req/s over all; %d hook requests failed)",
				med, m.hookRatios[0], m.hookRatios[len(m.hookRatios)-1], len(m.hookRatios), m.proxyRate, m.hookRate, m.hookFailed),
			miss: fmt.Sprintf("%.2f short", proxyMinHookRatio-med)})
	case hook != nil:
		r := m.proxyRate / hook.high
		out = append(out, verdict{ok: r >= proxyMinHookRatio,
			what: fmt.Sprintf("%s proxy: at least %.0f× the hook (its best measured figure, %.0f req/s, measured earlier, not in this run%s)", name, proxyMinHookRatio, hook.high, notMeasured(hook.why)),
			got: fmt.Sprintf("%.2f× (%.0f req/s; %.2f× the hook's low figure, %.0f req/s)",
				r, m.proxyRate, m.proxyRate/hook.low, hook.low),
			miss: fmt.Sprintf("%.0f req/s short", proxyMinHookRatio*hook.high-m.proxyRate)})
	}
	out = append(out, verdict{ok: m.failed == 0 && !m.secrets, what: name + " proxy: no failed request, no token in the bridge's log",
		got: fmt.Sprintf("%d failed, token in log: %v", m.failed, m.secrets)})
	return out
}

// signedMs is ms with a sign: the proxy's p99 may come out below direct.
func signedMs(d time.Duration) string {
	if d < 0 {
		return "-" + ms(-d)
	}
	return "+" + ms(d)
}

// proxyConfig is the binary's configuration for the proxy rows: as
// binaryConfig, with proxy.listen on proxyListen (and proxy.upstream when
// upstream is set; directus.url stays Directus), a rule mapping items:read
// to role, and tokens living 1h (capped at the IdP token's expiry), so that
// no rotation falls inside a run and invalidates the direct side's token.
func (e *env) proxyConfig(role, proxyListen, upstream string) func(listen, state string) string {
	return func(listen, state string) string {
		px := "{listen: " + proxyListen + "}"
		if upstream != "" {
			px = fmt.Sprintf("{listen: %s, upstream: %q}", proxyListen, upstream)
		}
		return e.configWith(listen, state, "tokens: {ttl: 1h}\n", "proxy-readers", role, "proxy: "+px+"\n")
	}
}

// proxyCollection creates the collection the rows read (proxyItems items)
// and a role whose policy reads it; everything is deleted by e.cleanup.
func (e *env) proxyCollection(ctx context.Context) (collection string, role directus.Role, err error) {
	collection = "bridge_bench_" + e.run // a table name: no hyphen
	err = e.admin.do(ctx, http.MethodPost, "/collections", map[string]any{
		"collection": collection,
		"meta":       map[string]any{"hidden": true, "note": "bridge-bench " + e.run},
		"schema":     map[string]any{},
		"fields": []map[string]any{
			{"field": "id", "type": "integer", "meta": map[string]any{"hidden": true, "readonly": true},
				"schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}},
			{"field": "name", "type": "string", "meta": map[string]any{}, "schema": map[string]any{}},
		},
	}, nil)
	if err != nil {
		return "", role, fmt.Errorf("create collection: %w", err)
	}
	e.collections = append(e.collections, collection)
	items := make([]map[string]any, proxyItems)
	for i := range items {
		items[i] = map[string]any{"name": fmt.Sprintf("item %d", i)}
	}
	if err := e.admin.do(ctx, http.MethodPost, "/items/"+collection, items, nil); err != nil {
		return "", role, fmt.Errorf("create items: %w", err)
	}
	name := "bridge-bench-proxy-" + e.run
	p, err := e.dc.CreatePolicy(ctx, directus.Policy{Name: name})
	if err != nil {
		return "", role, err
	}
	e.policies = append(e.policies, p.ID)
	if err := e.admin.do(ctx, http.MethodPost, "/permissions", map[string]any{
		"policy": p.ID, "collection": collection, "action": "read", "fields": []string{"*"},
		"permissions": map[string]any{}, "validation": map[string]any{},
	}, nil); err != nil {
		return "", role, fmt.Errorf("create permission: %w", err)
	}
	r, err := e.dc.CreateRole(ctx, directus.Role{Name: name, Policies: []string{p.ID}})
	if err != nil {
		return "", role, err
	}
	e.roles = append(e.roles, r.ID)
	return collection, r, nil
}

// getItems sends GET u with a bearer token and reads the whole answer.
func getItems(ctx context.Context, hc *http.Client, u, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var env struct {
			Errors []struct {
				Extensions struct {
					Code string `json:"code"`
				} `json:"extensions"`
			} `json:"errors"`
		}
		_ = json.Unmarshal(b, &env)
		code := ""
		if len(env.Errors) > 0 {
			code = env.Errors[0].Extensions.Code
		}
		return nil, fmt.Errorf("GET %s: status %d %s", strings.SplitN(u, "?", 2)[0], resp.StatusCode, code)
	}
	return b, nil
}

// proxyRows measures the proxy-mode rows against e's Directus with the
// binary bin.
func proxyRows(ctx context.Context, stderr io.Writer, cfg config, e *env, bin string) (*proxyReport, error) {
	rep := &proxyReport{directus: fmt.Sprintf("Directus %s (%s)", e.d.Version, e.d.Database), hook: hookFor(e.d.Version), swaps: -1}
	dir, err := os.MkdirTemp("", "bridge-bench-proxy-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	coll, roleRec, err := e.proxyCollection(ctx)
	if err != nil {
		return rep, err
	}
	role := roleRec.Name
	rep.collection = coll
	clients, err := registerClients(ctx, newHTTPClient(2), "auth0", e.st.IdP.Issuers["auth0"], "bridge-bench-"+e.run+"-proxy", 1, 3600, 1)
	if err != nil {
		return rep, err
	}
	c := clients[0]
	e.users = append(e.users, e.userID(c.Subject))
	path := "/items/" + coll
	directURL := e.d.URL + path

	// The hook, before the binary starts: Directus restarts twice.
	var hook *proxySide
	if !cfg.proxyHook {
		rep.hookWhy = "-proxy-hook=false"
	} else {
		rep.hookWhy = hookUnavailable(e)
	}
	if rep.hookWhy == "" {
		hc, err := hookSetup(ctx, stderr, e, rep, roleRec.ID, directURL, cfg.proxyConcurrency)
		if hc != nil {
			defer hc.CloseIdleConnections()
		}
		if rep.uninstallHook != nil { // also after a failure: the stack as it was
			defer func() {
				if err := rep.uninstallHook(); err != nil {
					rep.hookRemoved = err.Error()
					fmt.Fprintln(stderr, "bridge-bench:", err)
				} else if rep.hookRemoved == "" {
					rep.hookRemoved = "removed, Directus restarted"
				}
			}()
		}
		if err != nil {
			return rep, err
		}
		hook = &proxySide{hc, directURL, rep.hookToken}
	}
	if hook == nil {
		if h := hookFor(e.d.Version); h != nil {
			f := *h
			f.why = rep.hookWhy
			rep.hook = &f
		}
	}
	proxyListen, err := freeAddr()
	if err != nil {
		return rep, err
	}
	progress(stderr, "%s: starting the binary with proxy.listen %s", e.d.Name, proxyListen)
	p, err := startBridgeWith(ctx, e, bin, dir, cfg.proxyProfile != "", nil, e.proxyConfig(role, proxyListen, ""))
	stopped := false
	finish := func() { // stops the binary and reads its log, once
		if stopped {
			return
		}
		stopped = true
		rep.stopped = p.stop()
		rep.log = readLog(p, e.d.AdminToken)
		if cfg.proxyLog != "" && p != nil {
			path := fmt.Sprintf("%s-%s.log", strings.TrimSuffix(cfg.proxyLog, ".log"), e.d.Name)
			if b, err := os.ReadFile(p.logPath); err == nil {
				_ = os.WriteFile(path, b, 0o600)
			}
		}
	}
	defer finish()
	if err != nil {
		return rep, err
	}
	conc := cfg.proxyConcurrency
	directHC, proxyHC := newHTTPClient(conc), newHTTPClient(conc)
	defer directHC.CloseIdleConnections()
	defer proxyHC.CloseIdleConnections()
	proxyURL := "http://" + proxyListen + path

	// Warm-up through the proxy: the first swap creates the machine user.
	// The proxy listener starts just after the exchange listener is ready.
	var viaProxy []byte
	for deadline := time.Now().Add(15 * time.Second); ; {
		if viaProxy, err = getItems(ctx, proxyHC, proxyURL, c.Token); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return rep, fmt.Errorf("warm-up through the proxy: %w", err)
	}
	var items struct {
		Data []json.RawMessage `json:"data"`
	}
	if json.Unmarshal(viaProxy, &items) != nil || len(items.Data) != proxyItems {
		return rep, fmt.Errorf("warm-up through the proxy: want %d items, got %d", proxyItems, len(items.Data))
	}
	rep.answer = len(viaProxy)
	// The direct side's token: one exchange with the same IdP token gives
	// the live token the proxy forwards.
	st, body, err := post(ctx, newHTTPClient(1), p.url+"/oauth/token", exchangeForm(c.Token))
	if err := expectOK(st, body, err); err != nil {
		return rep, fmt.Errorf("exchange for the direct side: %w", err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		return rep, fmt.Errorf("exchange for the direct side: no access_token")
	}
	static := tok.AccessToken
	direct, err := getItems(ctx, directHC, directURL, static)
	if err != nil {
		return rep, fmt.Errorf("direct with the static token: %w", err)
	}
	if !bytes.Equal(direct, viaProxy) {
		return rep, fmt.Errorf("direct and through the proxy, Directus answered differently (%d and %d bytes)", len(direct), len(viaProxy))
	}
	if hook != nil {
		viaHook, err := getItems(ctx, hook.hc, hook.url, hook.token)
		if err != nil {
			return rep, fmt.Errorf("through the hook: %w", err)
		}
		if !bytes.Equal(viaHook, direct) {
			return rep, fmt.Errorf("direct and through the hook, Directus answered differently (%d and %d bytes)", len(direct), len(viaHook))
		}
	}

	direct1 := proxySide{directHC, directURL, static}
	through := proxySide{proxyHC, proxyURL, c.Token}
	mc := &http.Client{Timeout: 5 * time.Second}
	before, errBefore := scrape(ctx, mc, p.url)
	if rep.rounds, err = alternate(ctx, stderr, cfg, conc, e.d.Name, p.cmd.Process.Pid, direct1, through, hook); err != nil {
		return rep, err
	}
	if hook != nil {
		if rep.hookUserSeen, err = e.hookUserState(ctx, rep.hookUser, roleRec.ID); err != nil {
			return rep, err
		}
	}
	if after, err := scrape(ctx, mc, p.url); err == nil && errBefore == nil {
		rep.swaps = metricSum(after, "directus_bridge_exchanges_total") - metricSum(before, "directus_bridge_exchanges_total")
		rep.upstream = metricSum(after, "directus_bridge_directus_request_duration_seconds_count") -
			metricSum(before, "directus_bridge_directus_request_duration_seconds_count")
	}
	if cfg.proxyProfile != "" {
		path := fmt.Sprintf("%s-%s.pprof", strings.TrimSuffix(cfg.proxyProfile, ".pprof"), e.d.Name)
		progress(stderr, "%s: profiled proxy row (not counted) -> %s", e.d.Name, path)
		if err := profileRow(ctx, p.pprof, path, cfg.duration, func() {
			load(ctx, conc, cfg.duration, cfg.maxRequests, through.op())
		}); err != nil {
			return rep, err
		}
		rep.profiled = path
	}
	if rep.uninstallHook != nil {
		// Directus as it was, for the rows below; the binary first, so
		// that the restart does not reach its log.
		finish()
		if err := rep.uninstallHook(); err != nil {
			rep.hookRemoved = err.Error()
			return rep, err
		}
		rep.hookRemoved = "removed, Directus restarted"
	}
	if !cfg.proxyNoop {
		return rep, nil
	}

	// The proxy's own cost, without Directus's noise: the same binary on
	// the same state (the live token is reused, nothing is written), its
	// proxy.upstream a no-op server in its own process that answers every
	// GET with as many bytes as Directus did.
	finish()
	noop, err := startNoopArgs(false, "-get-bytes", fmt.Sprint(rep.answer))
	if err != nil {
		return rep, err
	}
	defer noop.stop()
	if proxyListen, err = freeAddr(); err != nil {
		return rep, err
	}
	progress(stderr, "%s: starting the binary again, proxy.upstream a no-op server", e.d.Name)
	p2, err := startBridgeWith(ctx, e, bin, dir, cfg.proxyProfile != "", nil, e.proxyConfig(role, proxyListen, noop.url))
	defer func() {
		rep.noopStopped = p2.stop()
		rep.noopLog = readLog(p2, e.d.AdminToken)
	}()
	if err != nil {
		return rep, err
	}
	noopURL := noop.url + path
	through = proxySide{proxyHC, "http://" + proxyListen + path, c.Token}
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err = getItems(ctx, proxyHC, through.url, c.Token); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return rep, fmt.Errorf("warm-up through the proxy to the no-op: %w", err)
	}
	// The bridge's CPU with nothing to do, for the CPU per request above.
	cpu0, t0 := processCPU(p2.cmd.Process.Pid), time.Now()
	time.Sleep(2 * time.Second)
	rep.idleCPU = float64(processCPU(p2.cmd.Process.Pid)-cpu0) / time.Since(t0).Seconds()
	if rep.noop, err = alternate(ctx, stderr, cfg, cfg.proxyNoopConc, e.d.Name+", no-op upstream", p2.cmd.Process.Pid, proxySide{directHC, noopURL, static}, through, nil); err != nil {
		return rep, err
	}
	if cfg.proxyProfile != "" {
		// With -proxy-concurrency clients: the proxy busy, many samples.
		path := fmt.Sprintf("%s-%s-noop.pprof", strings.TrimSuffix(cfg.proxyProfile, ".pprof"), e.d.Name)
		progress(stderr, "%s: profiled proxy row in front of the no-op (not counted) -> %s", e.d.Name, path)
		if err := profileRow(ctx, p2.pprof, path, cfg.duration, func() {
			load(ctx, conc, cfg.duration, cfg.maxRequests, through.op())
		}); err != nil {
			return rep, err
		}
		rep.profiledNoop = path
	}
	return rep, nil
}

// proxySide is one side of a proxy row: GET url with token.
type proxySide struct {
	hc         *http.Client
	url, token string
}

func (s proxySide) op() func(ctx context.Context, _, _ int) error {
	return func(ctx context.Context, _, _ int) error {
		_, err := getItems(ctx, s.hc, s.url, s.token)
		return err
	}
}

// alternate measures -proxy-rounds rounds of direct against through (and
// hook, when not nil), alternated in -proxy-slice slices: the order turns
// by one side each slice (direct first in slice 0, the proxy first in slice
// 1, ...), so that no side always follows the same one. It also measures
// the CPU time of process pid (the bridge) during the proxy's slices.
func alternate(ctx context.Context, stderr io.Writer, cfg config, conc int, name string, pid int, direct, through proxySide, hook *proxySide) ([]proxyRound, error) {
	var out []proxyRound
	nSlices := max(1, int((cfg.duration+cfg.proxySlice-1)/cfg.proxySlice))
	slice := cfg.duration / time.Duration(nSlices)
	sides, what := 2, "direct and through the proxy"
	if hook != nil {
		sides, what = 3, "direct, through the proxy and through the hook"
	}
	for round := range cfg.proxyRounds {
		progress(stderr, "%s: proxy round %d of %d: %s alternated in %d slices of %s each",
			name, round+1, cfg.proxyRounds, what, nSlices, slice)
		var r proxyRound
		for sl := range nSlices {
			for j := range sides {
				n := max(1, cfg.maxRequests/nSlices)
				switch (j + sl) % sides {
				case 0:
					r.direct.merge(load(ctx, conc, slice, n, direct.op()))
				case 1:
					cpu0 := processCPU(pid)
					r.proxy.merge(load(ctx, conc, slice, n, through.op()))
					r.bridgeCPU += processCPU(pid) - cpu0
				case 2:
					r.hook.merge(load(ctx, conc, slice, n, hook.op()))
				}
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
			}
		}
		slices.Sort(r.direct.lat)
		slices.Sort(r.proxy.lat)
		slices.Sort(r.hook.lat)
		out = append(out, r)
	}
	return out, nil
}

// printRounds prints the table of rounds.
func printRounds(w io.Writer, direct string, rounds []proxyRound) {
	fmt.Fprintf(w, "| round | %[1]s /s | %[1]s p50 | %[1]s p99 | proxy /s | proxy p50 | proxy p99 | proxy / %[1]s | p50 added | p99 added | bridge CPU per proxied request |\n", direct)
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	row := func(label string, d, p result, cpu time.Duration) {
		ratio := 0.0
		if d.rate() > 0 {
			ratio = p.rate() / d.rate()
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %.0f | %s | %s | %.2f× | %s | %s | %s |\n", label,
			d.rate(), ms(d.pct(0.5)), ms(d.pct(0.99)), p.rate(), ms(p.pct(0.5)), ms(p.pct(0.99)), ratio,
			signedMs(p.pct(0.5)-d.pct(0.5)), signedMs(p.pct(0.99)-d.pct(0.99)), perRequest(cpu, p))
	}
	var cpu time.Duration
	for i, rd := range rounds {
		row(fmt.Sprint(i+1), rd.direct, rd.proxy, rd.bridgeCPU)
		cpu += rd.bridgeCPU
	}
	d, p := total(rounds)
	row("all", d, p, cpu)
	fmt.Fprintln(w)
	m := measure(rounds, logStats{})
	if len(m.ratios) > 0 {
		fmt.Fprintf(w, "proxy / %s: min %.2f×, median %.2f×, max %.2f× over %d rounds\n", direct, m.ratios[0], median(m.ratios), m.ratios[len(m.ratios)-1], len(m.ratios))
	}
	for _, s := range []struct {
		name string
		res  result
	}{{direct, d}, {"proxy", p}} {
		if s.res.failed > 0 {
			fmt.Fprintf(w, "%s: %d requests failed, first: %v\n", s.name, s.res.failed, s.res.firstErr)
		}
	}
}

func printLog(w io.Writer, stopped string, l logStats) {
	var msgs []string
	for m, c := range l.byMsg {
		msgs = append(msgs, fmt.Sprintf("%q %d", m, c))
	}
	slices.Sort(msgs)
	fmt.Fprintf(w, "log after the shutdown (%s): %d bytes, %d lines (%d not JSON); by message: %s\n",
		stopped, l.bytes, l.lines, l.unparsed, strings.Join(msgs, ", "))
	if l.secrets {
		fmt.Fprintln(w, "SECRET IN THE LOG: a dbr_ token, a JWT or the admin token reached the bridge's log")
	}
}

func (r *proxyReport) print(w io.Writer, cfg config) {
	if r == nil || len(r.rounds) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Proxy mode: a machine client reading a collection, %d concurrent clients, %s per side per round, %d rounds\n\n",
		cfg.proxyConcurrency, cfg.duration, cfg.proxyRounds)
	fmt.Fprintf(w, "request: GET /items/%s (%d items, %d-byte answer), keep-alive clients in this process; loopback only\n", r.collection, proxyItems, r.answer)
	fmt.Fprintln(w, "direct: to Directus with the machine user's static token (one exchange at the bridge gave it): the limit")
	fmt.Fprintln(w, "proxy: to the binary's proxy.listen with the IdP access token, swapped in process for the same static token (serve, own process, JSON logs at info to a file, rate limits off, reconciler off)")
	if hookMeasuredIn(r.rounds) {
		fmt.Fprintf(w, "hook: to Directus with another IdP client's access token, verified by the hook extension installed for these rows (below)\n")
		fmt.Fprintf(w, "each round alternates the three sides in slices of about %s, the order turning by one side each slice (direct, proxy, hook; proxy, hook, direct; ...)\n\n", cfg.proxySlice)
	} else {
		fmt.Fprintf(w, "each round alternates the two sides in slices of about %s (direct first in even slices, the proxy first in odd ones)\n\n", cfg.proxySlice)
	}
	printRounds(w, "direct", r.rounds)
	d, p := total(r.rounds)
	switch {
	case hookMeasuredIn(r.rounds):
		printHookRounds(w, r)
	case r.hook != nil:
		h := r.hook
		fmt.Fprintf(w, "hook extension not measured in this run (%s)\n", r.hookWhy)
		fmt.Fprintf(w, "hook extension (measured earlier, not in this run: %s): %.0f-%.0f req/s, beside %.0f-%.0f req/s with a static token then\n",
			h.where, h.low, h.high, h.directLow, h.directHigh)
		fmt.Fprintf(w, "proxy / hook: %.2f× its best figure, %.2f× its low figure; direct in this run / static then: %.2f×-%.2f×\n",
			p.rate()/h.high, p.rate()/h.low, d.rate()/h.directHigh, d.rate()/h.directLow)
		m := measure(r.rounds, r.log)
		fmt.Fprintf(w, "estimate, not a measurement: proxy / direct here (median %.2f×) times static / hook then (%.2f×-%.2f×) = %.2f×-%.2f× the hook on one machine\n",
			median(m.ratios), h.directLow/h.high, h.directHigh/h.low, median(m.ratios)*h.directLow/h.high, median(m.ratios)*h.directHigh/h.low)
	default:
		fmt.Fprintf(w, "hook extension: not measured (%s), no figure for this Directus (on Directus 12 Core the common hook fails every request with 400 INVALID_PAYLOAD)\n", r.hookWhy)
	}
	if r.swaps >= 0 {
		fmt.Fprintf(w, "bridge during the counted rows: %d proxied requests, %.0f swaps in its exchange metrics, %.0f Directus requests of its own (background ones included)\n",
			p.ok+p.failed, r.swaps, r.upstream)
	}
	if r.profiled != "" {
		fmt.Fprintf(w, "CPU profile of the bridge in an extra proxy row (not counted): %s (go tool pprof -top %s)\n", r.profiled, r.profiled)
	}
	printLog(w, r.stopped, r.log)
	if len(r.noop) > 0 {
		fmt.Fprintf(w, "\n#### The proxy's own cost: proxy.upstream a no-op server\n\n")
		fmt.Fprintf(w, "no-op: this program's noop-server, own process, answering every GET with %d bytes of JSON; direct: to it; proxy: the same binary on the same state, the same IdP token, proxy.upstream the no-op; %d concurrent client(s)\n", r.answer, cfg.proxyNoopConc)
		fmt.Fprintf(w, "bridge CPU with no request (2 s before these rows): %.1f ms per second\n\n", r.idleCPU*1000)
		printRounds(w, "no-op", r.noop)
		if r.profiledNoop != "" {
			fmt.Fprintf(w, "CPU profile of the bridge in an extra row in front of the no-op, %d clients (not counted): %s\n", cfg.proxyConcurrency, r.profiledNoop)
		}
		printLog(w, r.noopStopped, r.noopLog)
	}
}

func (r *proxyReport) verdicts() []verdict {
	if r == nil || len(r.rounds) == 0 {
		return nil
	}
	var own *proxyMeasure
	if len(r.noop) > 0 {
		m := measure(r.noop, r.noopLog)
		own = &m
	}
	return proxyVerdicts(r.directus, measure(r.rounds, r.log), own, r.hook)
}

// printHookRounds prints the hook row beside the two others, round by round.
func printHookRounds(w io.Writer, r *proxyReport) {
	fmt.Fprintln(w, "\nhook: the common hook extension (testdata/stack/hook), installed into this Directus for these rows; a second IdP client with the same scope sends its IdP token straight to Directus, where the hook verifies it and reads and updates its user on every request")
	fmt.Fprintf(w, "before the hook, Directus refused that token (%s); it was loaded during all three sides' slices (a static token passes it after one decode)\n\n", r.hookBefore)
	fmt.Fprintln(w, "| round | direct /s | proxy /s | hook /s | hook p50 | hook p99 | proxy / hook | direct / hook |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|")
	row := func(label string, d, p, h result) {
		var ph, dh float64
		if h.rate() > 0 {
			ph, dh = p.rate()/h.rate(), d.rate()/h.rate()
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %s | %s | %.2f× | %.2f× |\n", label,
			d.rate(), p.rate(), h.rate(), ms(h.pct(0.5)), ms(h.pct(0.99)), ph, dh)
	}
	var hook result
	for i, rd := range r.rounds {
		row(fmt.Sprint(i+1), rd.direct, rd.proxy, rd.hook)
		hook.merge(rd.hook)
	}
	slices.Sort(hook.lat)
	d, p := total(r.rounds)
	row("all", d, p, hook)
	fmt.Fprintln(w)
	m := measure(r.rounds, logStats{})
	if len(m.hookRatios) > 0 {
		fmt.Fprintf(w, "proxy / hook: min %.2f×, median %.2f×, max %.2f× over %d rounds\n", m.hookRatios[0], median(m.hookRatios), m.hookRatios[len(m.hookRatios)-1], len(m.hookRatios))
	}
	if hook.failed > 0 {
		fmt.Fprintf(w, "hook: %d requests failed, first: %v\n", hook.failed, hook.firstErr)
	}
	fmt.Fprintf(w, "the hook's user after these rows: %s\n", r.hookUserSeen)
	fmt.Fprintf(w, "hook extension after these rows: %s\n", r.hookRemoved)
}

// notMeasured is why, as a clause of the fallback verdict.
func notMeasured(why string) string {
	if why == "" {
		return ""
	}
	return ": the hook was not measured: " + why
}
