package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"time"
)

// pprofEnv names the environment variable that turns on the Go profiler
// (net/http/pprof under /debug/pprof/) on its own listener, e.g.
// DIRECTUS_BRIDGE_PPROF=127.0.0.1:6060. It is off by default. The address
// MUST be a loopback IP literal with a port: a profile shows memory and
// goroutine stacks, so it MUST NOT be reachable from the network, and it is
// never served on the bridge's own listener.
const pprofEnv = "DIRECTUS_BRIDGE_PPROF"

// init starts the profiler when pprofEnv is set, before any subcommand runs
// (it is meant for `serve` under load: cmd/bridge-bench -binary-cpuprofile).
// A bad address is reported and the profiler stays off; the bridge itself
// is not affected either way.
func init() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := checkPprofAddr(addr); err != nil {
		log.Error("profiler not started", "env", pprofEnv, "err", err)
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("profiler not started", "env", pprofEnv, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Warn("profiler listening (debug only)", "env", pprofEnv, "listen", ln.Addr().String())
}

// checkPprofAddr accepts host:port where host is a loopback IP literal.
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%q is not a loopback IP address (127.0.0.1 or ::1)", host)
	}
	return nil
}
