// Command directus-bridge exchanges OAuth 2.0 client-credentials tokens for
// short-lived Directus static tokens. Subcommands:
//
//	setup         prepare a Directus for the bridge: its own user and token
//	serve         run the token-exchange server
//	config check  validate the configuration file offline and exit
//	mappings      check the rules against Directus, or explain a decision
//	reconcile     reconcile machine users now (through a running server)
//	state reseal  rewrite the state under the first state key (rotation)
//	user-id       print the Directus user id the bridge derives for a client
//	healthcheck   probe a URL (container health checks)
//	version       print the version
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/proxy"
	"github.com/directus-bridge/directus-bridge/directus"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// The Directus client must satisfy what the bridge needs.
var _ bridge.Directus = (*directus.Client)(nil)

const usage = `usage: directus-bridge <command> [flags]

commands:
  setup -directus URL    create the bridge's own Directus policy, role, user
                         and token (idempotent; -dry-run shows the plan)
  serve                  run the token-exchange server
  config check           check the configuration file offline, listing every
                         problem with its path and line
  mappings check         check the rules against the live Directus
  mappings explain -issuer NAME [-client ID] [-scopes "a b"] [-claim k=v] [-offline]
                         which rule matches, the role and policies, and why
                         (exit 0 ALLOW, 1 DENY, 2 usage, 3 no decision)
  reconcile [-dry-run] [-json] [-local]
                         reconcile machine users now: through the running
                         server's admin listener when admin.listen is set,
                         else (or with -local) with the state file
  state reseal           rewrite the state sealed by older state keys under
                         the first (key rotation; serve does it at start)
  state copy -from OLD.yaml  copy OLD.yaml's state into this one's (bbolt/postgres)
  user-id ID             print the Directus user id derived for client ID
  healthcheck [-url URL] exit 0 when the URL answers 200 (container probes)
  version                print the version

"directus-bridge <command> -h" lists a command's flags. The configuration
file is -config PATH, else $DIRECTUS_BRIDGE_CONFIG, else directus-bridge.yaml
in the working directory.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "config":
		if len(args) == 2 && isHelp(args[1]) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprintln(stderr, `usage: directus-bridge config check [-config FILE] (the one "config" command; -h for help)`)
			return 2
		}
		return configCheck(args[2:], stdout, stderr)
	case "user-id":
		return userID(args[1:], stdout, stderr)
	case "mappings":
		return mappings(args[1:], stdout, stderr)
	case "state":
		return stateCmd(args[1:], stdout, stderr)
	case "reconcile":
		return reconcileCmd(args[1:], stdout, stderr)
	case "setup":
		return setupCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "directus-bridge", version)
		return 0
	case "healthcheck":
		return healthcheck(args[1:], stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return 2
}

func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("DIRECTUS_BRIDGE_CONFIG")
	if def == "" {
		def = "directus-bridge.yaml"
	}
	return fs.String("config", def, "configuration file (env DIRECTUS_BRIDGE_CONFIG)")
}

func userID(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("user-id", `usage: directus-bridge user-id [-namespace UUID] [-issuer URL] CLIENT_ID

Prints the Directus user id the bridge derives for the client CLIENT_ID (for
Auth0, the client id followed by @clients): uuidv5(CLIENT_ID) in the NIL
namespace, as the hook extension did, or the issuer-scoped id with -issuer.
Reads no configuration.

flags:
`, "\nexit codes: 0 printed, 2 usage error\n", stderr)
	ns := fs.String("namespace", uuid.Nil.String(), "UUID namespace (users.namespace)")
	issuer := fs.String("issuer", "", "issuer URL, for issuers with user_ids: issuer")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: directus-bridge user-id [-namespace UUID] [-issuer URL] CLIENT_ID")
		return 2
	}
	n, err := uuid.Parse(*ns)
	if err != nil {
		fmt.Fprintf(stderr, "namespace: %v\n", err)
		return 2
	}
	var is *bridge.IssuerConfig
	if *issuer != "" {
		is = &bridge.IssuerConfig{Issuer: *issuer, UserIDs: bridge.UserIDsIssuer}
	}
	fmt.Fprintln(stdout, bridge.UserID(n, is, fs.Arg(0)))
	return 0
}

// newLogger logs at cfg.Log's level and format, every line passed through
// a secretMask.
func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	c := cfg.Log
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: newSecretMask(cfg).replaceAttr}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(args []string, stderr io.Writer) int {
	fs := newFlagSet("serve", `usage: directus-bridge serve [-config FILE]

Runs the token-exchange server (listen), and the admin listener when
admin.listen is set. Reloads on SIGHUP and when the file changes; stops
gracefully on SIGTERM or SIGINT. Logs go to standard error.

flags:
`, "\nexit codes: 0 stopped gracefully, 1 the configuration is invalid, the state cannot be opened,\n  the rules cannot be put in force or a listener fails, 2 usage error\n", stderr)
	path := configFlag(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg, ok := loadOrReport(*path, stderr)
	if !ok {
		return 1
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runServer(ctx, *path, cfg, log); err != nil {
		log.Error("directus-bridge stopped", "err", err)
		return 1
	}
	return 0
}

// runServer runs until ctx ends, then shuts down gracefully: in-flight
// exchanges finish, new connections are refused, the state store is closed.
func runServer(ctx context.Context, path string, cfg *Config, log *slog.Logger) error {
	// A SIGHUP while the bridge still waits for Directus must reload, not
	// end the process (its default action); an edit of the file meanwhile
	// is applied once the rules are in force.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	loadedAt := modTime(path)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Listen at once. Until the state is open (a standby waits for it)
	// the server answers alive and not ready; then the bridge's handler
	// takes over on the same server.
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	var handler atomic.Pointer[http.Handler]
	waiting := waitingHandler("starting: opening the state")
	handler.Store(&waiting)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
	}
	errc := make(chan error, 2)
	go func() {
		if cfg.TLS.CertFile != "" {
			errc <- srv.ServeTLS(l, cfg.TLS.CertFile, cfg.TLS.KeyFile)
			return
		}
		errc <- srv.Serve(l)
	}()
	store, err := holdState(ctx, cfg, &handler, log)
	if err != nil {
		srv.Close()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			log.Info("stopped while waiting for the state")
			return nil // SIGTERM to a standby: a graceful stop
		}
		return err
	}
	ex, err := exchangerOn(ctx, cfg, log, reg, store, false)
	if err != nil {
		store.Close()
		srv.Close()
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the state store", "err", err)
		}
	}()
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	// Another process took the state over (PostgreSQL, after a lost
	// connection): this one's records may be stale, so it stops.
	store.OnLost(func(err error) { fail(err) })
	if n := store.SealedByOlderKeys(); n > 0 {
		go resealOnStart(store, n, log)
	}
	if sh := store.Shared(); sh != nil {
		store.SetLogger(log)
		// Replicas: the revoker, reconciler and watcher run on the one that
		// holds the jobs lease; it lives one revoke interval (at least 1s)
		// past each renewal, so another replica takes over within about
		// 1.3 of them after the holder dies, and revokes at once.
		leader := bridge.NewLeader(sh, replicaName(), leaseTTL(ex), log)
		ex.SetLeader(leader)
		go leader.Run(ctx)
		log.Info("replica of a shared state", "replica", leader.Holder())
	}
	dc := ex.Directus()
	// The scheduled runs and the admin listener's share it: one reconcile
	// at a time, with the settings a reload last put in force.
	rec := bridge.NewReconciler(ex, cfg.Reconcile)
	// Listen at once (liveness answers while Directus and the IdPs are
	// waited for); exchanges answer 503 until the rules are in force.
	var cronMu sync.Mutex
	var stopCron func()
	go func() {
		go ex.WarmEach(ctx, log) // in parallel: an IdP that hangs holds up no rules
		go ex.RunRevoker(ctx)
		if err := loadRules(ctx, ex, dc, cfg, log, 0); err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("the rules cannot be put in force: %w", err))
			}
			return
		}
		log.Info("rules in force", "rules", len(cfg.Rules))
		ex.DetectProvider(ctx)
		if d := cfg.Reconcile.WatchInterval.D(); d > 0 {
			if _, err := ex.Watch(ctx); err != nil {
				log.Warn("watching Directus for changes failed; next try on the next tick", "err", err)
			}
			go ex.RunWatcher(ctx, d)
		}
		sched, err := newReconcileSchedule(ctx, rec, cfg.Reconcile, log)
		if err != nil {
			fail(err)
			return
		}
		cronMu.Lock()
		stopCron = sched.stop
		cronMu.Unlock()
		go watchConfig(ctx, path, hup, loadedAt, &reloader{ex: ex, dc: dc, sched: sched, log: log, cur: cfg}, log)
	}()
	defer func() {
		cronMu.Lock()
		defer cronMu.Unlock()
		if stopCron != nil {
			stopCron()
		}
	}()

	var proxies []netip.Prefix
	for _, p := range cfg.TrustedProxies {
		proxies = append(proxies, netip.MustParsePrefix(p)) // validated
	}
	bs := &bridge.Server{Exchanger: ex, Logger: log, TrustedProxies: proxies,
		MetricsHandler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Ready: func(context.Context) map[string]error {
			checks := map[string]error{"rules": nil}
			if !ex.Loaded() {
				checks["rules"] = errors.New("not in force yet: waiting for Directus")
			}
			if store.Shared() != nil {
				checks["state"] = nil
				if !store.Coherent() {
					checks["state"] = errors.New("no recent news of the other replicas' writes from the database: exchanges read the database under the user's lock")
				}
			}
			return checks
		}}
	defer bs.Close() // after Shutdown, before the store closes: the open reuse summaries are written
	real := bs.Handler()
	handler.Store(&real)
	admin, err := adminServer(ctx, cfg, rec, log)
	if err != nil {
		srv.Close()
		return err
	}
	if admin != nil {
		go func() { errc <- fmt.Errorf("admin listener: %w", admin.ListenAndServe()) }()
		log.Info("admin listener serving", "listen", cfg.Admin.Listen)
	}
	px, err := proxyServer(cfg, bs, proxies, log)
	if err != nil {
		srv.Close()
		if admin != nil {
			admin.Close()
		}
		return err
	}
	if px != nil {
		go func() {
			if cfg.TLS.CertFile != "" {
				errc <- fmt.Errorf("proxy listener: %w", px.ListenAndServeTLS(cfg.TLS.CertFile, cfg.TLS.KeyFile))
				return
			}
			errc <- fmt.Errorf("proxy listener: %w", px.ListenAndServe())
		}()
		log.Info("proxy listener serving", "listen", cfg.Proxy.Listen, "upstream", cfg.Proxy.Upstream)
	}
	log.Info("directus-bridge serving", "listen", cfg.Listen, "version", version, "issuers", len(cfg.Issuers), "rules", len(cfg.Rules))
	closeAll := func() {
		srv.Close()
		if admin != nil {
			admin.Close()
		}
		if px != nil {
			px.Close()
		}
	}
	select {
	case err := <-errc:
		closeAll()
		return err
	case <-ctx.Done():
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		closeAll()
		return cause
	}
	log.Info("shutting down: finishing in-flight exchanges")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// An admin reconcile in progress ends with ctx (its requests' base
	// context): it is idempotent, the next run picks up.
	var errs []error
	if admin != nil {
		if err := admin.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("admin listener: %w", err))
		}
	}
	if px != nil {
		// Websockets (hijacked) are not waited for: they close with the
		// process, and their clients reconnect.
		if err := px.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("proxy listener: %w", err))
		}
	}
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// proxyServer is the proxy listener's server, or nil when proxy.listen is
// not set. It has no read or write deadline: bodies stream (a large upload
// or download takes as long as it takes) and websockets stay open; headers
// must arrive within 10s and an idle connection is closed after 2m.
func proxyServer(cfg *Config, bs *bridge.Server, trusted []netip.Prefix, log *slog.Logger) (*http.Server, error) {
	if cfg.Proxy.Listen == "" {
		return nil, nil
	}
	up, err := url.Parse(cfg.Proxy.Upstream)
	if err != nil {
		return nil, fmt.Errorf("proxy.upstream: %w", err) // validated
	}
	p, err := proxy.New(proxy.Options{
		Upstream: up, Exchanger: bs, Logger: log, TrustedProxies: trusted,
		MaxConnections: cfg.Proxy.MaxConnections, MaxWebsockets: cfg.Proxy.MaxWebsockets,
		QueueTimeout: cfg.Proxy.QueueTimeout.D(), ResponseTimeout: cfg.Proxy.ResponseTimeout.D(),
	})
	if err != nil {
		return nil, err
	}
	return &http.Server{
		Addr:              cfg.Proxy.Listen,
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}, nil
}

// adminServer is the admin listener's server, or nil when admin.listen is
// not set. Its requests' context is ctx, so that a reconcile asked for on
// it ends when the server stops; a request is bounded by
// bridge.AdminRunTimeout (a reconcile of many thousand users takes
// minutes), the write deadline a minute beyond.
func adminServer(ctx context.Context, cfg *Config, rec *bridge.Reconciler, log *slog.Logger) (*http.Server, error) {
	if cfg.Admin.Listen == "" {
		return nil, nil
	}
	h, err := bridge.NewAdminServer(rec, os.Getenv(cfg.Admin.TokenEnv), log)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %s: %w", cfg.Admin.TokenEnv, err)
	}
	return &http.Server{
		Addr:              cfg.Admin.Listen,
		Handler:           h,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      bridge.AdminRunTimeout + time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    8 << 10,
	}, nil
}

// loadRules checks the rules against Directus and puts them in force. At
// start Directus may still be booting: it is tried every 2s for wait (0:
// until ctx ends), with a log line every 30s.
func loadRules(ctx context.Context, ex *bridge.Exchanger, dc bridge.Directus, cfg *Config, log *slog.Logger, wait time.Duration) error {
	start := time.Now()
	var logged time.Time
	for {
		m, warnings, err := bridge.LoadMapper(ctx, dc, cfg.Rules)
		if errors.Is(err, directus.ErrUnavailable) && (wait == 0 || time.Since(start) < wait) {
			if time.Since(logged) >= 30*time.Second {
				log.Warn("Directus not reachable yet, retrying; exchanges answer 503 meanwhile", "err", err,
					"waited", time.Since(start).Round(time.Second).String())
				logged = time.Now()
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
			continue
		}
		if err != nil {
			return err
		}
		for _, w := range warnings {
			log.Warn(w)
		}
		ex.SetMapper(m)
		return nil
	}
}

// watchConfig reloads the configuration on SIGHUP and when the file
// changes (checked every 2s). An invalid file is logged and nothing changes.
// The file's modification time when the configuration in force was read is
// last; hup delivers SIGHUP.
func watchConfig(ctx context.Context, path string, hup <-chan os.Signal, last time.Time, r *reloader, log *slog.Logger) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-tick.C:
			if m := modTime(path); m.Equal(last) {
				continue
			}
		}
		last = modTime(path)
		cfg, err := loadValid(path)
		if err != nil {
			log.Error("reload refused: the configuration in force stays", "err", err)
			continue
		}
		r.apply(ctx, cfg)
	}
}

// modTime is the file's modification time, zero when it cannot be read.
func modTime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// healthcheck GETs a URL and exits 0 on 200: a health probe for images
// without a shell or curl (the distroless image).
func healthcheck(args []string, stderr io.Writer) int {
	fs := newFlagSet("healthcheck", `usage: directus-bridge healthcheck [-url URL]

GETs the URL (5 s timeout): a health probe for images without a shell.

flags:
`, "\nexit codes: 0 the URL answered 200, 1 it did not (the reason on standard error), 2 usage error\n", stderr)
	u := fs.String("url", "http://127.0.0.1:8080/healthz", "URL to probe")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(*u)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, resp.Status)
		return 1
	}
	return 0
}

// isHelp tells whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// parseFlags parses a subcommand's flags. -h prints its usage and exits 0
// (asked for); any other flag error exits 2 (a usage error).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	}
	return 2, false
}

// resealOnStart rewrites, sealed with the first state key, the n records
// that older keys sealed, so that those keys can be removed.
func resealOnStart(store *bridge.Store, n int, log *slog.Logger) {
	log.Info("resealing the state under the first state key", "records", n)
	done, err := store.Reseal()
	if err != nil {
		log.Error("resealing the state failed; the older state keys are still needed", "resealed", done, "err", err)
		return
	}
	log.Info("state resealed under the first state key: the other keys can be removed", "resealed", done)
}

// replicaName names this process among the replicas of a shared state, in
// logs and in the jobs lease: the host, the process id and a random part
// (a restarted process is another replica).
func replicaName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}

// leaseTTL is the jobs lease's lifetime: the revoke interval in force (its
// default applied), at least a second.
func leaseTTL(ex *bridge.Exchanger) time.Duration { return max(ex.RevokeInterval(), time.Second) }
