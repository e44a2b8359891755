package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
)

// reconcileCmd runs one reconciliation now. It opens the state file itself,
// so it refuses to run while `serve` holds it (the server runs its own
// schedule).
func reconcileCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	dry := fs.Bool("dry-run", false, "print the plan, change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg, ok := loadOrReport(*path, stderr)
	if !ok {
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ex, store, err := newExchanger(ctx, cfg, log, nil, true)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer store.Close()
	rep, err := ex.Reconcile(ctx, cfg.Reconcile, *dry)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printReport(stdout, rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
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
	key, err := bridge.LoadKey(os.Getenv(cfg.State.KeyEnv), cfg.State.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	store, err := bridge.OpenStore(cfg.State.Path, key)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is a bridge already running on this state file?)", err)
	}
	var metrics *bridge.Metrics
	if reg != nil {
		metrics = bridge.NewMetrics(reg, store, time.Now)
	}
	ex, err := wire(ctx, cfg, log, store, metrics, loadNow)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return ex, store, nil
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
