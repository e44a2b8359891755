package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
	"github.com/directus-bridge/directus-bridge/directus"
)

// reconcileCmd runs one reconciliation now. When admin.listen is set it
// asks the running server (POST /v1/reconcile on its admin listener), which
// runs it one at a time with its schedule; when nothing listens there, or
// with -local, it opens the state file itself, which it cannot while a
// server holds it.
func reconcileCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reconcile", `usage: directus-bridge reconcile [-dry-run] [-json] [-local] [-config FILE]

Reconciles the machine users now and prints the report: through the running
server's admin listener when admin.listen is set (with the token of
admin.token_env), else, or with -local, by opening the state itself (only
while the server is stopped).

flags:
`, "\nexit codes: 0 the run completed, 1 it failed, 2 usage error\n", stderr)
	path := configFlag(fs)
	dry := fs.Bool("dry-run", false, "print the plan, change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	local := fs.Bool("local", false, "open the state file directly even when admin.listen is set (the server must be stopped)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg, ok := loadOrReport(*path, stderr)
	if !ok {
		return 1
	}
	finish := func(rep *bridge.Report, err error) int {
		if rep != nil {
			if *asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(rep)
			} else {
				printReport(stdout, rep)
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	// The server bounds its run at bridge.AdminRunTimeout; its answer is
	// awaited a little longer.
	ctx, cancel := context.WithTimeout(context.Background(), bridge.AdminRunTimeout+time.Minute)
	defer cancel()
	fellBack := false
	if cfg.Admin.Listen != "" && !*local {
		rep, err := remoteReconcile(ctx, cfg.Admin, *dry)
		if !errors.Is(err, errNotListening) {
			return finish(rep, err)
		}
		fmt.Fprintf(stderr, "reconcile: no server answers on admin.listen (%s): opening the state file directly\n", cfg.Admin.Listen)
		fellBack = true
	}
	log := newLogger(cfg, stderr)
	ex, store, err := newExchanger(ctx, cfg, log, nil, true)
	if err != nil {
		if errors.Is(err, state.ErrHeld) {
			err = lockedError(cfg, fellBack)
		}
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer store.Close()
	return finish(ex.Reconcile(ctx, cfg.Reconcile, *dry))
}

// lockedError explains a state file held by another process: a running
// server, which is where the reconcile should go.
func lockedError(cfg *Config, fellBack bool) error {
	if cfg.State.Driver == driverPostgres {
		switch {
		case cfg.Admin.Listen == "":
			return errors.New("reconcile: the state in PostgreSQL is held by a running server; set admin.listen to reconcile through it")
		case fellBack:
			return fmt.Errorf("reconcile: the state in PostgreSQL is held by a server running without an admin listener on %s (admin.listen needs a restart of the server)", cfg.Admin.Listen)
		default:
			return errors.New("reconcile: the state in PostgreSQL is held by a running server; reconcile through its admin listener (without -local)")
		}
	}
	switch {
	case cfg.Admin.Listen == "":
		return fmt.Errorf("reconcile: the state file %s is locked: the server is running; set admin.listen to reconcile through it", cfg.State.Path)
	case fellBack:
		return fmt.Errorf("reconcile: the state file %s is locked: a server is running without an admin listener on %s (admin.listen needs a restart of the server)", cfg.State.Path, cfg.Admin.Listen)
	default:
		return fmt.Errorf("reconcile: the state file %s is locked: the server is running; reconcile through its admin listener (without -local)", cfg.State.Path)
	}
}

// errNotListening says that nothing accepts connections on admin.listen.
var errNotListening = errors.New("nothing listens on admin.listen")

// adminURL is the URL of path on the admin listener: an unspecified host
// (empty, 0.0.0.0, ::) is reached on 127.0.0.1.
func adminURL(listen, path string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen: %w", err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// remoteReconcile asks the server listening on admin.listen to reconcile.
// The report is returned whenever the server ran one, failed runs
// included; errNotListening when the connection is refused.
func remoteReconcile(ctx context.Context, ac AdminConfig, dry bool) (*bridge.Report, error) {
	u, err := adminURL(ac.Listen, "/v1/reconcile?dry_run="+strconv.FormatBool(dry))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv(ac.TokenEnv))
	resp, err := http.DefaultClient.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil, errNotListening
	}
	if err != nil {
		return nil, fmt.Errorf("reconcile: asking the server on admin.listen (%s): %w", ac.Listen, err)
	}
	defer resp.Body.Close()
	var body struct {
		bridge.Report
		Description string `json:"error_description"`
	}
	decodeErr := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body)
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("reconcile: the server on admin.listen (%s) refused the admin token: set %s to the token the server was started with", ac.Listen, ac.TokenEnv)
	case decodeErr != nil:
		return nil, fmt.Errorf("reconcile: the server on admin.listen (%s) answered %s, not a report", ac.Listen, resp.Status)
	case body.Description != "":
		return nil, fmt.Errorf("reconcile: the server on admin.listen (%s) answered %s: %s", ac.Listen, resp.Status, body.Description)
	case resp.StatusCode != http.StatusOK:
		msg := body.Error
		if msg == "" {
			msg = "the reconcile failed"
		}
		return &body.Report, fmt.Errorf("reconcile: the server on admin.listen (%s) answered %s: %s", ac.Listen, resp.Status, msg)
	}
	return &body.Report, nil
}

func printReport(w io.Writer, rep *bridge.Report) {
	verb := "did"
	if rep.DryRun {
		verb = "would do (dry run)"
	}
	fmt.Fprintf(w, "reconcile %s: scanned %d users, %d managed, %d changes, %d skipped (exchanged meanwhile), %s\n",
		verb, rep.Scanned, rep.Managed, len(rep.Changes), rep.Skipped, rep.Duration)
	for _, c := range rep.Changes {
		fmt.Fprintf(w, "  %-8s %s %s: %s\n", c.Action, c.UserID, c.Client, c.Detail)
	}
}

// newExchanger wires the state store, the Directus client and the rules;
// with reg it also creates and registers the metrics.
func newExchanger(ctx context.Context, cfg *Config, log *slog.Logger, reg prometheus.Registerer, loadNow bool) (*bridge.Exchanger, *bridge.Store, error) {
	store, err := openStore(ctx, cfg, false)
	if err != nil {
		return nil, nil, err
	}
	ex, err := exchangerOn(ctx, cfg, log, reg, store, loadNow)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return ex, store, nil
}

// exchangerOn wires the exchanger on an open store; with reg it also
// creates and registers the metrics. It does not close store.
func exchangerOn(ctx context.Context, cfg *Config, log *slog.Logger, reg prometheus.Registerer, store *bridge.Store, loadNow bool) (*bridge.Exchanger, error) {
	var metrics *bridge.Metrics
	if reg != nil {
		metrics = bridge.NewMetrics(reg, store, time.Now)
	}
	return wire(ctx, cfg, log, store, metrics, loadNow)
}

// wire builds the exchanger and, with loadNow, puts the rules in force
// (waiting up to a minute for Directus); serve loads them in the
// background instead, so that it listens at once.
func wire(ctx context.Context, cfg *Config, log *slog.Logger, store *bridge.Store, metrics *bridge.Metrics, loadNow bool) (*bridge.Exchanger, error) {
	dc, err := directus.New(cfg.Directus.URL, os.Getenv(cfg.Directus.TokenEnv), directus.Options{
		Timeout: cfg.Directus.Timeout.D(), Retries: cfg.Directus.Retries, UserAgent: "directus-bridge/" + version,
		Observe: metrics.ObserveDirectus,
	})
	if err != nil {
		return nil, err
	}
	ex, err := bridge.NewExchanger(bridge.Options{
		Issuers: cfg.Issuers, Tokens: cfg.Tokens, Users: cfg.Users, Directus: dc, Store: store, Logger: log,
		Limits: cfg.Limits, Metrics: metrics,
	})
	if err != nil {
		return nil, err
	}
	if !loadNow {
		return ex, nil
	}
	return ex, loadRules(ctx, ex, dc, cfg, log, time.Minute)
}

// cronLogger adapts slog to cron's logger.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}

// openStore opens the state the configuration names, with every state key.
//
// With state.shared and shared set (serve), the store is one replica of
// several; every other command opens the state for itself alone, and so
// waits for (or is refused by) replicas that are running.
func openStore(ctx context.Context, cfg *Config, shared bool) (*bridge.Store, error) {
	keys, err := bridge.LoadKeys(os.Getenv(cfg.State.KeyEnv), cfg.State.KeyFile)
	if err != nil {
		return nil, err
	}
	var store *bridge.Store
	switch cfg.State.Driver {
	case driverPostgres:
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if cfg.State.Shared && shared {
			b, err := pgstate.OpenShared(octx, os.Getenv(cfg.State.DSNEnv))
			if err != nil {
				return nil, fmt.Errorf("state (postgres, shared, DSN from %s): %w", cfg.State.DSNEnv, err)
			}
			if store, err = bridge.NewSharedStore(b, cfg.State.MaxStale.D(), keys...); err != nil {
				b.Close()
				return nil, fmt.Errorf("state (postgres, shared): %w", err)
			}
			return store, nil
		}
		b, err := pgstate.Open(octx, os.Getenv(cfg.State.DSNEnv))
		if err != nil {
			return nil, fmt.Errorf("state (postgres, DSN from %s): %w", cfg.State.DSNEnv, err)
		}
		if store, err = bridge.NewStore(b, keys...); err != nil {
			b.Close()
			return nil, fmt.Errorf("state (postgres): %w", err)
		}
	default:
		if store, err = bridge.OpenStore(cfg.State.Path, keys...); err != nil {
			return nil, err // a held file says so itself
		}
	}
	return store, nil
}
