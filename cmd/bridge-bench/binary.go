package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The rows of the real-binary table: the real directus-bridge binary, run as an operator
// runs it (its own process, `serve -config`, JSON logs at info to a file,
// rate limits off), next to a no-op Go server in its own process that
// parses the same form and writes a JSON answer of the same size, both
// behind the production http.Server settings and driven by the same
// keep-alive client from this process. Within a row the two servers take
// turns in short slices (-binary-slice), so that a change in the machine's
// load hits both sides of a ratio alike, and every ratio is taken within one
// round. The bridge's CPU profile (-binary-cpuprofile) comes from an extra
// row that is not counted.

// binaryReport holds the rounds of the binary rows.
type binaryReport struct {
	binary    string
	logPath   string
	clients   []int // the client counts measured, e.g. 1 and 200
	rounds    []binaryRound
	profiled  []string // CPU profile files of extra, uncounted rows
	answer    int      // bytes of the no-op's answer
	log       logStats
	reused    float64 // reused exchanges the bridge counted in the counted rows (its metrics)
	reusedAll float64 // all reused exchanges it counted, at the end (profiled rows too)
	directus  float64 // Directus requests the bridge made during the load rows (its metrics)
	stopped   string  // how the binary ended
	gcCycles  float64 // the bridge's GC cycles during the counted rows
	heapInuse float64 // its heap in use after them, bytes
}

type binaryRound struct {
	clients      int
	noop, bridge result
	// CPU time of the server process (the no-op's or the bridge's) during
	// its row; result.cpu is this process's (the load generator's).
	noopCPU, bridgeCPU time.Duration
}

// processCPU is the user + system CPU time of process pid so far, from
// /proc/<pid>/stat (0 when it cannot be read).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces), from field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	const ticks = 100                           // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// perRequest is the CPU time per answered request.
func perRequest(cpu time.Duration, res result) string {
	if res.ok+res.failed == 0 || cpu <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", float64(cpu.Nanoseconds())/1000/float64(res.ok+res.failed))
}

// logStats is what the bridge's log file held at the end.
type logStats struct {
	bytes, lines int
	byMsg        map[string]int
	summarised   int  // the reuses counted by reuse summary lines
	reuseLines   int  // reuses logged on their own line (after the summaries were closed)
	secrets      bool // a token or the admin token reached the log
	unparsed     int  // lines that are not JSON
}

// bridgeProcess is a running directus-bridge serve.
type bridgeProcess struct {
	cmd     *exec.Cmd
	url     string // http://127.0.0.1:port
	pprof   string // http://127.0.0.1:port of DIRECTUS_BRIDGE_PPROF, or ""
	logPath string
	logFile *os.File
	done    chan error
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buildBridge builds cmd/directus-bridge of this module into dir.
func buildBridge(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "directus-bridge")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/directus-bridge/directus-bridge/cmd/directus-bridge")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/directus-bridge: %v\n%s", err, out)
	}
	return bin, nil
}

// binaryConfig is the configuration the binary runs with: the env's issuer
// and rules, rate limits off, the reconciler off (it would scan a shared
// stack's users; it never runs on the returning-client path anyway),
// everything else at its default.
func (e *env) binaryConfig(listen, state string) string {
	return e.configWith(listen, state, "", "readers", e.reader.Name, "")
}

// configWith is the binary's configuration: tokens (a YAML line or ""),
// one rule mapping items:read to role, and extra lines at the end.
func (e *env) configWith(listen, state, tokens, rule, role, extra string) string {
	is := e.st.IdP.Issuers["auth0"]
	return fmt.Sprintf(`listen: %s
directus: {url: %q}
state: {path: %q}
%slimits: {per_ip: {rate: -1}, per_client: {rate: -1}}
reconcile: {schedule: "off"}
users: {namespace: %q}
issuers:
  - name: auth0
    issuer: %q
    audiences: [%q]
    required_claims: {gty: client-credentials}
    require_typ: at+jwt
rules:
  - {name: %s, any_scopes: [items:read], role: %q}
log: {level: info, format: json}
%s`, listen, e.d.URL, state, tokens, e.ns.String(), is.Issuer, is.Audience, rule, role, extra)
}

// startBridge runs bin serve in dir with e.binaryConfig (see
// startBridgeWith).
func startBridge(ctx context.Context, e *env, bin, dir string, profile bool, env []string) (*bridgeProcess, error) {
	return startBridgeWith(ctx, e, bin, dir, profile, env, e.binaryConfig)
}

// startBridgeWith runs bin serve in dir with the configuration conf
// returns for the listen address and the state file, its log (stderr and
// stdout) in dir/bridge.log, with env (KEY=value) added to this process's
// environment, and waits until /readyz answers 200.
func startBridgeWith(ctx context.Context, e *env, bin, dir string, profile bool, env []string, conf func(listen, state string) string) (*bridgeProcess, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(cfgPath, []byte(conf(listen, filepath.Join(dir, "state.db"))), 0o600); err != nil {
		return nil, err
	}
	p := &bridgeProcess{url: "http://" + listen, logPath: filepath.Join(dir, "bridge.log"), done: make(chan error, 1)}
	if p.logFile, err = os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "serve", "-config", cfgPath)
	p.cmd.Env = append(os.Environ(), "DIRECTUS_BRIDGE_DIRECTUS_TOKEN="+e.d.AdminToken)
	p.cmd.Env = append(p.cmd.Env, env...)
	if profile {
		pa, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p.pprof = "http://" + pa
		p.cmd.Env = append(p.cmd.Env, "DIRECTUS_BRIDGE_PPROF="+pa)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logFile, p.logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.logFile.Close()
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := hc.Get(p.url + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return p, fmt.Errorf("the bridge exited before it was ready: %v (log: %s)", err, p.logPath)
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("the bridge was not ready within 90s (log: %s)", p.logPath)
		}
	}
}

// stop sends SIGTERM (a graceful shutdown, as an orchestrator stops it) and
// waits up to 30 s, then kills.
func (p *bridgeProcess) stop() string {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return "not started"
	}
	defer p.logFile.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			return "exited after SIGTERM: " + err.Error()
		}
		return "exited 0 after SIGTERM"
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return "killed: no exit within 30s of SIGTERM"
	}
}

// noopProcess is the reference server in its own process.
type noopProcess struct {
	cmd   *exec.Cmd
	url   string
	pprof string // http://127.0.0.1:port of its profiler, or ""
	stdin io.WriteCloser
	done  chan error
}

// startNoop runs this program's noop-server mode, answering answerLen bytes,
// with a profiler on a loopback port when profile is set.
func startNoop(answerLen int, profile bool) (*noopProcess, error) {
	return startNoopArgs(profile, "-answer-bytes", strconv.Itoa(answerLen))
}

// startNoopArgs runs this program's noop-server mode with args.
func startNoopArgs(profile bool, args ...string) (*noopProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &noopProcess{done: make(chan error, 1)}
	args = append([]string{"noop-server"}, args...)
	if profile {
		pa, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p.pprof = "http://" + pa
		args = append(args, "-pprof", pa)
	}
	p.cmd = exec.Command(self, args...)
	p.cmd.Stderr = os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = p.cmd.Process.Kill()
		return nil, fmt.Errorf("no-op server: %v", err)
	}
	p.url = strings.TrimSpace(line)
	go func() { p.done <- p.cmd.Wait() }()
	return p, nil
}

func (p *noopProcess) stop() {
	if p == nil {
		return
	}
	_ = p.stdin.Close() // it exits when its stdin closes
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// noopServer is the reference: the production http.Server settings, a
// handler that reads the body, parses the form as the bridge does
// (url.ParseQuery), checks the parameters are there and writes the bridge's
// headers and a JSON answer of answerBytes bytes. It prints its URL on
// stdout and exits when stdin closes.
func noopServer(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("noop-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("answer-bytes", 200, "size of the JSON answer")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback `address`")
	getBytes := fs.Int("get-bytes", 0, "instead, answer every GET with a JSON body of this many bytes (the proxy rows' upstream)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(stderr, "noop-server:", err)
			return 1
		}
		go func() { _ = http.Serve(ln, mux) }()
	}
	answer := noopAnswer(*n)
	if *getBytes > 0 {
		answer = []byte(`{"data":"` + strings.Repeat("x", max(0, *getBytes-len(`{"data":""}`))) + `"}`)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *getBytes > 0 {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = w.Write(answer)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil || form.Get("grant_type") == "" || form.Get("subject_token") == "" || form.Get("subject_token_type") == "" {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		_, _ = w.Write(answer)
	})
	u, stop, err := serve(h)
	if err != nil {
		fmt.Fprintln(stderr, "noop-server:", err)
		return 1
	}
	defer stop()
	fmt.Fprintln(stdout, u)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// noopAnswer is a token response of n bytes (at least its fixed part),
// shaped as the bridge's: a dbr_ token padded to the length.
func noopAnswer(n int) []byte {
	build := func(tok string) []byte {
		b, _ := json.Marshal(map[string]any{"access_token": tok, "expires_in": 900,
			"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "items:read", "token_type": "Bearer"})
		return append(b, '\n')
	}
	fixed := len(build("dbr_"))
	return build("dbr_" + strings.Repeat("x", max(0, n-fixed)))
}

// metricSum sums the samples of one metric in a Prometheus text exposition
// whose labels contain every string of with (e.g. `outcome="reused"`).
func metricSum(text, name string, with ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // another metric with this prefix
		}
		ok := true
		for _, w := range with {
			ok = ok && strings.Contains(rest, w)
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func scrape(ctx context.Context, hc *http.Client, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// binaryRows measures the real-binary rows against e's Directus.
func binaryRows(ctx context.Context, stderr io.Writer, cfg config, e *env) (*binaryReport, error) {
	rep := &binaryReport{}
	conc := cfg.binConcurrency
	counts := []int{1}
	if cfg.binClients > 1 {
		counts = append(counts, cfg.binClients)
	}
	rep.clients = counts
	dir, err := os.MkdirTemp("", "bridge-bench-binary-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	rep.binary = cfg.bridgeBinary
	if rep.binary == "" {
		progress(stderr, "building cmd/directus-bridge")
		if rep.binary, err = buildBridge(ctx, dir); err != nil {
			return rep, err
		}
	}
	n := max(1, cfg.binClients)
	progress(stderr, "%s: registering %d IdP clients for the binary rows", e.d.Name, n)
	clients, err := registerClients(ctx, newHTTPClient(8), "auth0", e.st.IdP.Issuers["auth0"], "bridge-bench-"+e.run+"-bin", n, 3600, 4)
	if err != nil {
		return rep, err
	}
	var extraEnv []string
	if cfg.binEnv != "" {
		extraEnv = strings.Split(cfg.binEnv, ",")
	}
	p, err := startBridge(ctx, e, rep.binary, dir, cfg.binProfile != "", extraEnv)
	defer func() {
		rep.stopped = p.stop()
		rep.log = readLog(p, e.d.AdminToken)
		if cfg.binLog != "" && p != nil {
			if b, err := os.ReadFile(p.logPath); err == nil && os.WriteFile(cfg.binLog, b, 0o600) == nil {
				rep.logPath = cfg.binLog
			}
		}
	}()
	if err != nil {
		return rep, err
	}
	hc := newHTTPClient(conc)
	defer hc.CloseIdleConnections()
	tokenURL := p.url + "/oauth/token"

	// First exchanges: each client's Directus user and token.
	progress(stderr, "%s: first exchange of %d clients (creates their users)", e.d.Name, n)
	forms := make([]string, n)
	for i, c := range clients {
		forms[i] = exchangeForm(c.Token)
		e.users = append(e.users, e.userID(c.Subject))
	}
	var answerLen int
	first := load(ctx, 4, 5*time.Minute, n, func(ctx context.Context, _, i int) error {
		st, body, err := post(ctx, hc, tokenURL, forms[i])
		if i == 0 {
			answerLen = len(body)
		}
		return expectOK(st, body, err)
	})
	if first.failed > 0 || first.ok != n {
		return rep, fmt.Errorf("first exchanges: %d of %d ok, first error: %v", first.ok, n, first.firstErr)
	}
	rep.answer = answerLen
	noop, err := startNoop(answerLen, cfg.binProfile != "")
	if err != nil {
		return rep, err
	}
	defer noop.stop()
	noopURL := noop.url + "/oauth/token"

	op := func(u string, clients int) func(ctx context.Context, w, i int) error {
		return func(ctx context.Context, w, i int) error {
			return expectOK(post(ctx, hc, u, forms[i%clients]))
		}
	}
	mc := &http.Client{Timeout: 5 * time.Second}
	before, err := scrape(ctx, mc, p.url)
	if err != nil {
		return rep, err
	}
	// Each row of -duration is cut in slices of -binary-slice, alternated
	// between the two servers (no-op first in even slices, the bridge first
	// in odd ones): a change of the machine's load then falls on both.
	nSlices := max(1, int((cfg.duration+cfg.binSlice-1)/cfg.binSlice))
	slice := cfg.duration / time.Duration(nSlices)
	for round := range cfg.binRounds {
		for _, k := range counts {
			r := binaryRound{clients: k}
			sides := []struct {
				res *result
				cpu *time.Duration
				pid int
				url string
			}{{&r.noop, &r.noopCPU, noop.cmd.Process.Pid, noopURL}, {&r.bridge, &r.bridgeCPU, p.cmd.Process.Pid, tokenURL}}
			progress(stderr, "%s: round %d of %d, %d client(s): no-op and bridge alternated in %d slices of %s each",
				e.d.Name, round+1, cfg.binRounds, k, nSlices, slice)
			for sl := range nSlices {
				for j := range sides {
					s := sides[(j+sl)%2]
					cpu0 := processCPU(s.pid)
					s.res.merge(load(ctx, conc, slice, max(1, cfg.maxRequests/nSlices), op(s.url, k)))
					*s.cpu += processCPU(s.pid) - cpu0
					if ctx.Err() != nil {
						return rep, ctx.Err()
					}
				}
			}
			slices.Sort(r.noop.lat)
			slices.Sort(r.bridge.lat)
			rep.rounds = append(rep.rounds, r)
		}
	}
	after, err := scrape(ctx, mc, p.url)
	if err != nil {
		return rep, err
	}
	rep.reused = metricSum(after, "directus_bridge_exchanges_total", `outcome="reused"`) -
		metricSum(before, "directus_bridge_exchanges_total", `outcome="reused"`)
	rep.directus = metricSum(after, "directus_bridge_directus_request_duration_seconds_count") -
		metricSum(before, "directus_bridge_directus_request_duration_seconds_count")
	rep.gcCycles = metricSum(after, "go_gc_duration_seconds_count") - metricSum(before, "go_gc_duration_seconds_count")
	rep.heapInuse = metricSum(after, "go_memstats_heap_inuse_bytes")

	if cfg.binProfile != "" {
		for _, k := range counts {
			for _, side := range []struct{ name, pprof, url string }{{"bridge", p.pprof, tokenURL}, {"noop", noop.pprof, noopURL}} {
				path := fmt.Sprintf("%s-%s-%dclient.pprof", strings.TrimSuffix(cfg.binProfile, ".pprof"), side.name, k)
				progress(stderr, "%s: profiled row (not counted), %s, %d client(s) -> %s", e.d.Name, side.name, k, path)
				if err := profileRow(ctx, side.pprof, path, cfg.duration, func() {
					load(ctx, conc, cfg.duration, cfg.maxRequests, op(side.url, k))
				}); err != nil {
					return rep, err
				}
				rep.profiled = append(rep.profiled, path)
			}
		}
	}
	if final, err := scrape(ctx, mc, p.url); err == nil {
		rep.reusedAll = metricSum(final, "directus_bridge_exchanges_total", `outcome="reused"`)
	}
	return rep, nil
}

// profileRow runs row while the server at pprofURL records a CPU profile of
// d, and writes the profile to path.
func profileRow(ctx context.Context, pprofURL, path string, d time.Duration, row func()) error {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	errc := make(chan error, 1)
	go func() {
		hc := &http.Client{Timeout: d + 30*time.Second}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pprofURL, secs), nil)
		if err != nil {
			errc <- err
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			errc <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			errc <- fmt.Errorf("pprof: status %d", resp.StatusCode)
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // the profile starts first
	row()
	return <-errc
}

// readLog reads the bridge's log file: its size, lines by message, the
// reuses that summary lines account for, and whether anything secret is in
// it (the prefix of the bridge's tokens, a JWT, the admin token).
func readLog(p *bridgeProcess, adminToken string) logStats {
	st := logStats{byMsg: map[string]int{}}
	if p == nil {
		return st
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return st
	}
	st.bytes = len(b)
	st.secrets = bytes.Contains(b, []byte("dbr_")) || bytes.Contains(b, []byte("eyJ")) ||
		(adminToken != "" && bytes.Contains(b, []byte(adminToken)))
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		st.lines++
		var rec struct {
			Msg     string `json:"msg"`
			Event   string `json:"event"`
			Outcome string `json:"outcome"`
			Reuses  int    `json:"reuses"`
		}
		if json.Unmarshal(line, &rec) != nil {
			st.unparsed++
			continue
		}
		st.byMsg[rec.Msg]++
		switch {
		case rec.Event == "reuse_summary":
			st.summarised += rec.Reuses
		case rec.Event == "exchange" && rec.Outcome == "reused":
			st.reuseLines++
		}
	}
	return st
}

// ratios are the bridge/no-op throughput ratios of the rounds with k clients.
func (r *binaryReport) ratios(k int) []float64 {
	var out []float64
	for _, rd := range r.rounds {
		if rd.clients == k && rd.noop.rate() > 0 {
			out = append(out, rd.bridge.rate()/rd.noop.rate())
		}
	}
	slices.Sort(out)
	return out
}

func median(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *binaryReport) print(w io.Writer, cfg config) {
	if r == nil || len(r.rounds) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### The real binary vs a no-op server: %d concurrent clients, %s per row, %d rounds\n\n",
		cfg.binConcurrency, cfg.duration, cfg.binRounds)
	fmt.Fprintf(w, "bridge: %s serve, own process, JSON logs at info to a file, rate limits off, reconciler off", r.binary)
	if cfg.binEnv != "" {
		fmt.Fprintf(w, ", environment %s", cfg.binEnv)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "no-op: this program's noop-server, own process, same http.Server settings, url.ParseQuery of the same form, a %d-byte JSON answer\n", r.answer)
	fmt.Fprintf(w, "each row alternates the two servers in slices of about %s (no-op first in even slices, the bridge first in odd ones); each ratio is taken within its round\n\n", cfg.binSlice)
	fmt.Fprintln(w, "| round | clients | no-op /s | no-op p50 | no-op p99 | bridge /s | bridge p50 | bridge p99 | bridge / no-op | server CPU per request, no-op / bridge | load generator CPU per request |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for i, rd := range r.rounds {
		ratio := 0.0
		if rd.noop.rate() > 0 {
			ratio = rd.bridge.rate() / rd.noop.rate()
		}
		fmt.Fprintf(w, "| %d | %d | %.0f | %s | %s | %.0f | %s | %s | %.2f× | %s / %s | %s |\n", i/len(r.clients)+1, rd.clients,
			rd.noop.rate(), ms(rd.noop.pct(0.5)), ms(rd.noop.pct(0.99)),
			rd.bridge.rate(), ms(rd.bridge.pct(0.5)), ms(rd.bridge.pct(0.99)), ratio,
			perRequest(rd.noopCPU, rd.noop), perRequest(rd.bridgeCPU, rd.bridge), perRequest(rd.bridge.cpu, rd.bridge))
	}
	fmt.Fprintln(w)
	for _, k := range r.clients {
		rs := r.ratios(k)
		if len(rs) > 0 {
			fmt.Fprintf(w, "%d client(s): bridge / no-op min %.2f×, median %.2f×, max %.2f× over %d rounds\n", k, rs[0], median(rs), rs[len(rs)-1], len(rs))
		}
	}
	for _, rd := range r.rounds {
		for _, s := range []struct {
			name string
			res  result
		}{{"no-op", rd.noop}, {"bridge", rd.bridge}} {
			if s.res.failed > 0 {
				fmt.Fprintf(w, "%s, %d client(s): %d requests failed, first: %v\n", s.name, rd.clients, s.res.failed, s.res.firstErr)
			}
		}
	}
	var exchanges int
	for _, rd := range r.rounds {
		exchanges += rd.bridge.ok + rd.bridge.failed
	}
	fmt.Fprintf(w, "bridge during the counted rows: %d exchanges, %.0f reused (its metrics), %.0f Directus requests (background ones included), %.0f GC cycles (%.0f exchanges each), heap in use %.1f MB after\n",
		exchanges, r.reused, r.directus, r.gcCycles, float64(exchanges)/max(1, r.gcCycles), r.heapInuse/1e6)
	for _, path := range r.profiled {
		fmt.Fprintf(w, "CPU profile of an extra row (not counted): %s (go tool pprof -top %s)\n", path, path)
	}
	l := r.log
	var msgs []string
	for m, c := range l.byMsg {
		msgs = append(msgs, fmt.Sprintf("%q %d", m, c))
	}
	slices.Sort(msgs)
	fmt.Fprintf(w, "log after the shutdown (%s): %d bytes, %d lines (%d not JSON); by message: %s\n",
		r.stopped, l.bytes, l.lines, l.unparsed, strings.Join(msgs, ", "))
	fmt.Fprintf(w, "reuses in the log: %d in reuse summaries + %d on their own line = %d of the %.0f reused exchanges the bridge counted in all (profiled rows included)\n",
		l.summarised, l.reuseLines, l.summarised+l.reuseLines, r.reusedAll)
	if l.secrets {
		fmt.Fprintln(w, "SECRET IN THE LOG: a dbr_ token, a JWT or the admin token reached the bridge's log")
	}
	if r.logPath != "" {
		fmt.Fprintf(w, "log kept at %s\n", r.logPath)
	}
}

func (r *binaryReport) verdicts() []verdict {
	var out []verdict
	if r == nil || len(r.rounds) == 0 {
		return out
	}
	for _, k := range r.clients {
		rs := r.ratios(k)
		if len(rs) == 0 {
			continue
		}
		m := median(rs)
		out = append(out, verdict{ok: m >= 0.9, what: fmt.Sprintf("real binary, %d client(s): at least 0.9× the no-op server (median of rounds)", k),
			got:  fmt.Sprintf("median %.2f× (min %.2f×, max %.2f×, %d rounds)", m, rs[0], rs[len(rs)-1], len(rs)),
			miss: fmt.Sprintf("%.2f short", 0.9-m)})
	}
	failed := 0
	for _, rd := range r.rounds {
		failed += rd.bridge.failed + rd.noop.failed
	}
	out = append(out, verdict{ok: !r.log.secrets && failed == 0, what: "real binary: no failed request, no secret in the log",
		got: fmt.Sprintf("%d failed, secret in log: %v", failed, r.log.secrets)})
	logged := float64(r.log.summarised + r.log.reuseLines)
	out = append(out, verdict{ok: r.reusedAll > 0 && logged == r.reusedAll,
		what: "real binary: every reused exchange is in the log after a graceful shutdown (summaries or own lines)",
		got:  fmt.Sprintf("%.0f of %.0f", logged, r.reusedAll), miss: fmt.Sprintf("%.0f missing", r.reusedAll-logged)})
	return out
}
