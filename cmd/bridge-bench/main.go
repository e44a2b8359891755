// Command bridge-bench is the load benchmark of directus-bridge.
// It runs an in-process bridge (bridge.NewExchanger behind
// bridge.Server.Handler on a loopback port, wired as `directus-bridge serve`
// wires it: JSON logs, metrics) against the real test stack that
// testdata/stack describes in stack.json, drives it with a keep-alive HTTP
// client from -concurrency goroutines, and prints one table: exchanges/s,
// p50 and p99 latency, the Directus requests per exchange, counted by an
// http.RoundTripper given to the bridge as directus.Options.Transport, and
// the state writes and all state calls per exchange, counted by a
// decorator of the state.Backend (of the state.Shared on a shared state:
// Lock, Read, Write and the rest), for
//
//   - returning clients whose live token is reused (verified-token cache on
//     and off),
//   - new clients (IdP clients registered up front, each exchanged once),
//   - clients whose token must be rotated at every exchange (ttl 1h,
//     rotate_before just under it),
//
// once per state backend of -state (default bbolt, and PostgreSQL too when
// stack.json has postgres.dsn), each from a fresh state: a new bbolt file,
// or a new schema in the stack's state database (CREATE SCHEMA, reached
// through search_path in the DSN, dropped at the end), with IdP clients of
// its own. postgres-shared is the state of replicas (pgstate.OpenShared,
// bridge.NewSharedStore) with one replica; postgres-shared2 is two
// replicas in this process, each its own OpenShared of one schema, Store,
// Exchanger and server, request i of a row going to replica i mod 2 (so a
// returning client is answered by both in turn). The rows run next to
// three reference rows measured in the same run: a no-op
// handler in the same server stack answering the same form POST (measured
// again just before each backend's rows, and each row's throughput is
// compared with the latest), one bare
// go-oidc verification of the same subject token (ns/op, with the bridge's
// in-process exchange for comparison), and Directus GET /users/me with a
// static token. A second table benchmarks the reconciler over -users seeded
// machine users: nothing to do, expired tokens, role changes.
//
// A third table (binary.go) runs the real binary: `go build` of
// cmd/directus-bridge (or -bridge-binary), `serve` in its own process with
// JSON logs at info to a file and rate limits off, next to a no-op Go server
// in its own process (this program's noop-server mode: the same http.Server
// settings, url.ParseQuery of the same form, a JSON answer of the bridge's
// size), -binary-concurrency clients, one client and -binary-clients
// distinct ones, the two servers alternating in -binary-slice slices within
// each of -binary-rounds rounds. It prints each round's throughput ratio,
// their spread, the CPU per request of each process, what the bridge's log
// holds at the end (and whether every reuse is in it), and with
// -binary-cpuprofile a CPU profile of each server (DIRECTUS_BRIDGE_PPROF on
// loopback for the bridge) from extra rows that are not counted.
//
// A fourth table (proxy.go) measures proxy mode on every Directus of
// stack.json, whatever -all-directus says: a machine client reading a small
// collection (GET /items/<collection>, created for the run with a role whose
// policy reads it) from -proxy-concurrency clients, directly with the
// machine user's static token (the limit) and through the real binary's
// proxy.listen with its IdP token, the two alternating in -proxy-slice
// slices within each of -proxy-rounds rounds. It prints each round's
// throughput ratio and the p99 the proxy adds. On Directus 11, with
// -proxy-hook and a hook in stack.json, it installs the common hook
// extension (testdata/stack/hook) into that Directus, restarts it, measures
// a third side in the same slices (another IdP client's token straight to
// Directus, verified by the hook) and compares the proxy with it; it
// removes the hook and restarts Directus again after those rows, also after
// a failure. Where the hook cannot be installed it compares with the
// figure docs/performance.md gives (measured earlier, not in this run) and
// says so. With -proxy-noop it
// measures the proxy again with proxy.upstream a no-op server in its own
// process (-proxy-noop-concurrency clients, one by default): the latency
// the proxy itself adds, without Directus's noise. -inprocess false,
// -reconcile false and -proxy false leave only the real-binary table;
// -binary false instead leaves only the proxy table.
//
// Every row is bounded by -duration and -max-requests. The performance
// targets are printed as PASS or MISS with the numbers; a miss does
// not fail the command (only a broken run does).
//
// Usage (make bench brings up a fresh stack and runs exactly this):
//
//	DIRECTUS_BRIDGE_STACK=/tmp/directus-bridge-stack/stack.json go run ./cmd/bridge-bench
//
// Everything it creates in Directus (roles, policies, users, and the proxy
// rows' collection bridge_bench_<run>) is named bridge-bench-<run> and
// deleted at the end, with the hook row's user (UUIDv5 of its sub in the
// NIL namespace, as the hook makes it). Machine user ids are UUIDv5 of
// the client id in a namespace drawn for the run (not the NIL namespace), so
// that neither this run nor another bridge's reconciler on a shared stack
// takes the other's users for its own.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// config holds the flags.
type config struct {
	stack       string
	duration    time.Duration
	concurrency int
	maxRequests int
	newClients  int
	users       int
	changes     int
	allDirectus bool
	reconcile   bool
	verifyTime  time.Duration
	rounds      int
	idleConns   int
	cpuProfile  string
	stateFlag   string   // -state as given
	states      []string // the state backends of the exchange rows

	inProcess      bool // the in-process exchange rows
	binaryRows     bool // the real binary vs a no-op server
	binConcurrency int
	binClients     int
	binRounds      int
	binSlice       time.Duration
	binProfile     string
	binLog         string
	bridgeBinary   string
	binEnv         string

	proxyRows        bool // proxy mode vs direct, on every Directus
	proxyNoop        bool // and with a no-op upstream
	proxyHook        bool // and the hook extension, on Directus 11
	proxyNoopConc    int
	proxyConcurrency int
	proxyRounds      int
	proxySlice       time.Duration
	proxyProfile     string
	proxyLog         string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "noop-server" {
		// The reference server of the binary rows, in its own process.
		os.Exit(noopServer(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet("bridge-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.stack, "stack", os.Getenv("DIRECTUS_BRIDGE_STACK"), "stack.json of the test stack (env DIRECTUS_BRIDGE_STACK)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "measuring time per load row")
	fs.IntVar(&cfg.concurrency, "concurrency", 8, "concurrent clients of the load rows")
	fs.IntVar(&cfg.maxRequests, "max-requests", 250000, "at most this many requests per load row")
	fs.IntVar(&cfg.newClients, "new-clients", 1000, "IdP clients registered up front for the new-client row of each state backend (capped by -max-requests)")
	fs.IntVar(&cfg.users, "users", 10000, "machine users seeded for the reconciler benchmark")
	fs.IntVar(&cfg.changes, "changes", 1000, "expired tokens and role changes in the reconciler benchmark")
	fs.BoolVar(&cfg.allDirectus, "all-directus", false, "also run against the stack's other Directus instances (11 on SQLite)")
	fs.BoolVar(&cfg.reconcile, "reconcile", true, "run the reconciler benchmark")
	fs.DurationVar(&cfg.verifyTime, "verify-time", 500*time.Millisecond, "measuring time of each verification micro-benchmark")
	fs.IntVar(&cfg.idleConns, "directus-idle-conns", runtime.GOMAXPROCS(0)+1,
		"idle keep-alive connections per host of the bridge's Directus transport (default: resty's, as in production)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (this process) to `file`")
	fs.IntVar(&cfg.rounds, "verify-rounds", 3, "rounds of the verification micro-benchmarks (the fastest counts)")
	fs.StringVar(&cfg.stateFlag, "state", "", "comma-separated state `backends` the in-process exchange rows run on, each from a fresh state: bbolt, postgres, "+
		"postgres-shared (one replica of a shared state), postgres-shared2 (two replicas of one shared state, the load spread over both) "+
		"(default bbolt,postgres when stack.json has postgres.dsn, else bbolt)")
	fs.BoolVar(&cfg.inProcess, "inprocess", true, "run the in-process exchange rows and the verification micro-benchmarks")
	fs.BoolVar(&cfg.binaryRows, "binary", true, "run the real directus-bridge binary against a no-op server in its own process")
	fs.IntVar(&cfg.binConcurrency, "binary-concurrency", 16, "concurrent keep-alive clients of the binary rows")
	fs.IntVar(&cfg.binClients, "binary-clients", 200, "distinct clients of the many-clients binary row (the other row has one)")
	fs.IntVar(&cfg.binRounds, "binary-rounds", 3, "rounds of the binary rows (the spread of the ratios is printed)")
	fs.DurationVar(&cfg.binSlice, "binary-slice", time.Second, "each binary row alternates the no-op and the bridge in slices of this length")
	fs.StringVar(&cfg.binProfile, "binary-cpuprofile", "", "profile the binary (DIRECTUS_BRIDGE_PPROF on loopback) and the no-op in one extra, uncounted row each per client count, to `prefix`-{bridge,noop}-<n>client.pprof")
	fs.StringVar(&cfg.binLog, "binary-log", "", "keep a copy of the binary's log at `file`")
	fs.StringVar(&cfg.binEnv, "binary-env", "", "comma-separated KEY=value pairs added to the binary's environment (e.g. GOGC=200)")
	fs.BoolVar(&cfg.proxyRows, "proxy", true, "run the proxy-mode rows (the real binary's proxy.listen vs Directus direct with a static token) on every Directus of stack.json")
	fs.BoolVar(&cfg.proxyHook, "proxy-hook", true, "on Directus 11, install the hook extension of stack.json for the proxy rows and measure it in the same rounds (removed after them)")
	fs.BoolVar(&cfg.proxyNoop, "proxy-noop", true, "also measure the proxy in front of a no-op upstream (its own cost, without Directus's noise)")
	fs.IntVar(&cfg.proxyNoopConc, "proxy-noop-concurrency", 1, "concurrent clients of the no-op-upstream proxy rows (1: the latency the proxy adds to one request, without queueing on a saturated machine)")
	fs.IntVar(&cfg.proxyConcurrency, "proxy-concurrency", 8, "concurrent keep-alive clients of the proxy rows")
	fs.IntVar(&cfg.proxyRounds, "proxy-rounds", 3, "rounds of the proxy rows (the spread of the ratios is printed)")
	fs.DurationVar(&cfg.proxySlice, "proxy-slice", time.Second, "each proxy round alternates direct and the proxy in slices of this length")
	fs.StringVar(&cfg.proxyProfile, "proxy-cpuprofile", "", "profile the binary in extra, uncounted proxy rows per Directus, to `prefix`-<directus>.pprof (and -noop.pprof, in front of the no-op)")
	fs.StringVar(&cfg.proxyLog, "proxy-log", "", "keep a copy of the proxy binary's log at `prefix`-<directus>.log")
	fs.StringVar(&cfg.bridgeBinary, "bridge-binary", "", "the directus-bridge binary to run (default: go build ./cmd/directus-bridge of this module)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.concurrency < 1 || cfg.duration <= 0 || cfg.maxRequests < 1 || cfg.rounds < 1 || cfg.changes*3 > cfg.users ||
		cfg.binConcurrency < 1 || cfg.binClients < 1 || cfg.binRounds < 1 || cfg.binSlice <= 0 ||
		cfg.proxyConcurrency < 1 || cfg.proxyNoopConc < 1 || cfg.proxyRounds < 1 || cfg.proxySlice <= 0 {
		fmt.Fprintln(stderr, "bridge-bench: need -concurrency >= 1, -duration > 0, -max-requests >= 1, -verify-rounds >= 1, -users >= 3 * -changes, "+
			"-binary-concurrency >= 1, -binary-clients >= 1, -binary-rounds >= 1, -binary-slice > 0, "+
			"-proxy-concurrency >= 1, -proxy-noop-concurrency >= 1, -proxy-rounds >= 1, -proxy-slice > 0")
		return 2
	}
	st, err := loadStack(cfg.stack)
	if err != nil {
		fmt.Fprintln(stderr, "bridge-bench:", err)
		return 1
	}
	if cfg.states, err = parseStates(cfg.stateFlag, st.Postgres.DSN != ""); err != nil {
		fmt.Fprintln(stderr, "bridge-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bridge-bench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bridge-bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	start := time.Now()
	if (cfg.binaryRows || cfg.proxyRows) && cfg.bridgeBinary == "" {
		// One build for the binary and the proxy rows.
		dir, err := os.MkdirTemp("", "bridge-bench-build-")
		if err != nil {
			fmt.Fprintln(stderr, "bridge-bench:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		progress(stderr, "building cmd/directus-bridge")
		if cfg.bridgeBinary, err = buildBridge(ctx, dir); err != nil {
			fmt.Fprintln(stderr, "bridge-bench:", err)
			return 1
		}
	}
	printHeader(stdout, cfg)
	var verdicts []verdict
	failed := false
	for i, d := range st.Directus {
		// The proxy rows run on every Directus; the others on the first,
		// or on every one with -all-directus.
		all := i == 0 || cfg.allDirectus
		if !all && !cfg.proxyRows {
			continue
		}
		vs, err := benchDirectus(ctx, stdout, stderr, cfg, st, d, i == 0, all)
		verdicts = append(verdicts, vs...)
		if err != nil {
			fmt.Fprintf(stderr, "bridge-bench: %s: %v\n", d.Name, err)
			failed = true
		}
	}
	met := 0
	for _, v := range verdicts {
		if v.ok {
			met++
		}
	}
	summary := fmt.Sprintf("bridge-bench: %d of %d targets met, %s in all", met, len(verdicts), time.Since(start).Round(time.Second))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(stdout, "\nload average at the end: %s\n", strings.Join(strings.Fields(string(b))[:3], " "))
	}
	fmt.Fprintln(stdout, "\n"+summary)
	if failed {
		return 1
	}
	return 0
}

func printHeader(w io.Writer, cfg config) {
	fmt.Fprintf(w, "# directus-bridge load benchmark (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (GOMAXPROCS %d), %s/%s, %s, %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.GOOS, runtime.GOARCH, cpuModel(), runtime.Version())
	if cfg.inProcess {
		fmt.Fprintf(w, "load: %d concurrent keep-alive clients in this process, %s per row, at most %d requests per row; loopback only\n",
			cfg.concurrency, cfg.duration, cfg.maxRequests)
		fmt.Fprintf(w, "bridge: in-process, JSON info logs, metrics, rate limits out of reach; %d idle connections to Directus; "+
			"the exchange rows once per state backend (%s), each from a fresh state\n", cfg.idleConns, strings.Join(cfg.states, ", "))
	}
	if cfg.binaryRows {
		fmt.Fprintf(w, "binary rows: %d concurrent keep-alive clients in this process, 1 and %d distinct clients, %s per row, %d rounds, at most %d requests per row; loopback only\n",
			cfg.binConcurrency, cfg.binClients, cfg.duration, cfg.binRounds, cfg.maxRequests)
	}
	if cfg.proxyRows {
		fmt.Fprintf(w, "proxy rows: every Directus, %d concurrent keep-alive clients in this process, %s per side per round, %d rounds, at most %d requests per side per round; loopback only\n",
			cfg.proxyConcurrency, cfg.duration, cfg.proxyRounds, cfg.maxRequests)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(w, "load average at start: %s\n", strings.Join(strings.Fields(string(b))[:3], " "))
	}
}

// cpuModel reads the CPU model from /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// env is what one Directus's benchmark shares: the run's names, the roles
// the rules grant, the issuers, where state files go, and what to clean up.
type env struct {
	d       directusInstance
	st      *stack
	run     string
	ns      uuid.UUID
	admin   *adminAPI
	dc      *directus.Client // admin client, not counted
	reader  directus.Role
	writer  directus.Role
	rules   mapping.Rules
	issuers []bridge.IssuerConfig
	dir     string // the exchange rows' bbolt files
	// idleConns is what the bridge's Directus transport keeps.
	idleConns int

	roles       []string
	policies    []string
	collections []string // created by the proxy rows
	users       []string // machine users created by the exchange and proxy rows
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newEnv(ctx context.Context, cfg config, st *stack, d directusInstance) (*env, error) {
	e := &env{d: d, st: st, run: randomHex(4), ns: uuid.New(), idleConns: cfg.idleConns}
	e.admin = &adminAPI{url: d.URL, token: d.AdminToken, hc: newHTTPClient(4)}
	var err error
	if e.dc, err = directus.New(d.URL, d.AdminToken, directus.Options{}); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bridge-bench-")
	if err != nil {
		return nil, err
	}
	e.dir = dir
	for _, r := range []struct {
		role *directus.Role
		name string
	}{{&e.reader, "reader"}, {&e.writer, "writer"}} {
		p, err := e.dc.CreatePolicy(ctx, directus.Policy{Name: "bridge-bench-" + r.name + "-" + e.run})
		if err != nil {
			return e, err
		}
		e.policies = append(e.policies, p.ID)
		*r.role, err = e.dc.CreateRole(ctx, directus.Role{Name: "bridge-bench-" + r.name + "-" + e.run, Policies: []string{p.ID}})
		if err != nil {
			return e, err
		}
		e.roles = append(e.roles, r.role.ID)
	}
	e.rules = mapping.Rules{{Name: "readers", AnyScopes: []string{"items:read"}, Role: e.reader.Name}}
	is := st.IdP.Issuers
	e.issuers = []bridge.IssuerConfig{
		{Name: "auth0", Issuer: is["auth0"].Issuer, Audiences: []string{is["auth0"].Audience},
			RequiredClaims: map[string]any{"gty": "client-credentials"}, RequireTyp: "at+jwt"},
		{Name: "supertokens", Issuer: is["supertokens"].Issuer, Audiences: []string{is["supertokens"].Audience},
			Algorithms: []string{"ES256"}, RequiredClaims: map[string]any{"stt": 1}, ScopeClaims: []string{"scp"}, UserIDs: bridge.UserIDsIssuer},
		{Name: "eddsa", Issuer: is["eddsa"].Issuer, Audiences: []string{is["eddsa"].Audience}, Algorithms: []string{"EdDSA"}, UserIDs: bridge.UserIDsIssuer},
	}
	return e, nil
}

// userID is the Directus user id of a client in this run's namespace.
func (e *env) userID(subject string) string { return bridge.UserID(e.ns, nil, subject) }

// deleteUsers deletes the machine users the exchange rows created.
func (e *env) deleteUsers(stderr io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := e.admin.deleteUsers(ctx, e.users, 500); err != nil {
		fmt.Fprintln(stderr, "bridge-bench: cleanup:", err)
		return
	}
	e.users = nil
}

// cleanup deletes what the run created in Directus and its state files.
func (e *env) cleanup(stderr io.Writer) {
	e.deleteUsers(stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, id := range e.roles {
		if err := e.admin.do(ctx, "DELETE", "/roles/"+id, nil, nil); err != nil {
			fmt.Fprintln(stderr, "bridge-bench: cleanup:", err)
		}
	}
	for _, id := range e.policies {
		if err := e.admin.do(ctx, "DELETE", "/policies/"+id, nil, nil); err != nil {
			fmt.Fprintln(stderr, "bridge-bench: cleanup:", err)
		}
	}
	for _, c := range e.collections {
		if err := e.admin.do(ctx, "DELETE", "/collections/"+c, nil, nil); err != nil {
			fmt.Fprintln(stderr, "bridge-bench: cleanup:", err)
		}
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// benchDirectus runs the rows against one Directus and prints its tables:
// with all, every row the flags ask for; without, the proxy rows only.
func benchDirectus(ctx context.Context, stdout, stderr io.Writer, cfg config, st *stack, d directusInstance, first, all bool) ([]verdict, error) {
	fmt.Fprintf(stdout, "\n## Directus %s (%s) at %s\n", d.Version, d.Database, d.URL)
	e, err := newEnv(ctx, cfg, st, d)
	if e != nil {
		defer e.cleanup(stderr)
	}
	if err != nil {
		return nil, err
	}
	var verdicts []verdict
	if cfg.inProcess && all {
		ex, err := exchangeRows(ctx, stderr, cfg, e, first)
		if ex != nil {
			ex.print(stdout, cfg)
		}
		verdicts = append(verdicts, ex.verdicts()...)
		if err != nil {
			return verdicts, err
		}
	}
	if cfg.binaryRows && first {
		bin, err := binaryRows(ctx, stderr, cfg, e)
		bin.print(stdout, cfg)
		verdicts = append(verdicts, bin.verdicts()...)
		if err != nil {
			return verdicts, err
		}
	}
	if cfg.proxyRows {
		px, err := proxyRows(ctx, stderr, cfg, e, cfg.bridgeBinary)
		px.print(stdout, cfg)
		verdicts = append(verdicts, px.verdicts()...)
		if err != nil {
			return verdicts, err
		}
	}
	e.deleteUsers(stderr) // before the reconciler scans every machine user
	if cfg.reconcile && all {
		rec, err := reconcileRows(ctx, stderr, cfg, e)
		if rec != nil {
			rec.print(stdout, cfg)
			verdicts = append(verdicts, rec.verdicts(cfg)...)
		}
		if err != nil {
			return verdicts, err
		}
	}
	fmt.Fprintln(stdout, "\n### Targets")
	for _, v := range verdicts {
		fmt.Fprintln(stdout, v)
	}
	return verdicts, nil
}

// verdict is one target checked against a measurement.
type verdict struct {
	ok   bool
	what string
	got  string
	miss string // by how much, when missed
}

func (v verdict) String() string {
	s := "PASS"
	if !v.ok {
		s = "MISS"
	}
	out := fmt.Sprintf("- %s %s: %s", s, v.what, v.got)
	if !v.ok && v.miss != "" {
		out += " (" + v.miss + ")"
	}
	return out
}

func progress(w io.Writer, format string, a ...any) {
	fmt.Fprintf(w, "bridge-bench: "+format+"\n", a...)
}
