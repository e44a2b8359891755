package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
)

// counter is an http.RoundTripper that counts the requests (retries
// included), the time until their response headers, and the TCP
// connections it opens.
type counter struct {
	base  http.RoundTripper
	reqs  atomic.Int64
	busy  atomic.Int64 // nanoseconds
	dials atomic.Int64
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.reqs.Add(1)
	t0 := time.Now()
	resp, err := c.base.RoundTrip(r)
	c.busy.Add(int64(time.Since(t0)))
	return resp, err
}

// newCounter returns a counting keep-alive transport that keeps up to
// maxIdle idle connections per host.
func newCounter(maxIdle int) *counter {
	c := &counter{}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c.base = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: maxIdle,
		IdleConnTimeout:     90 * time.Second,
	}
	return c
}

// serve runs h on a loopback port with the production server's settings
// (cmd/directus-bridge) and returns its base URL and its stop.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
	}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// instance is one in-process bridge on one Directus, behind its HTTP
// handler on a loopback port.
type instance struct {
	ex       *bridge.Exchanger
	url      string
	stop     func()
	directus *counter // the bridge's requests to Directus
}

// cluster is what one row drives: an instance on each Store of a state
// (one, or one per replica), each behind its own server; the load is
// spread over them by the request's index.
type cluster struct {
	insts []*instance
	state *benchState // whose calls are counted
}

// newCluster starts an instance on each Store of bs.
func newCluster(ctx context.Context, env *env, bs *benchState, tokens bridge.TokenConfig, cacheSize int) (*cluster, error) {
	cl := &cluster{state: bs}
	for _, store := range bs.stores {
		in, err := newInstance(ctx, env, store, tokens, cacheSize)
		if err != nil {
			cl.stop()
			return nil, err
		}
		cl.insts = append(cl.insts, in)
	}
	return cl, nil
}

// url is the token endpoint that request i goes to.
func (c *cluster) url(i int) string { return c.insts[i%len(c.insts)].url }

func (c *cluster) stop() {
	for _, in := range c.insts {
		in.stop()
	}
}

// directus sums the Directus transports' counters of every instance.
func (c *cluster) directus() (reqs, busy, dials int64) {
	for _, in := range c.insts {
		reqs += in.directus.reqs.Load()
		busy += in.directus.busy.Load()
		dials += in.directus.dials.Load()
	}
	return reqs, busy, dials
}

// newInstance wires an Exchanger as cmd/directus-bridge serve does: JSON
// logs at info level (to io.Discard), Prometheus metrics, store, rate
// limits on but out of reach (the defaults, 100/s per address and 20/s per
// client, would cap a benchmark from one address). The Directus transport
// keeps env.idleConns idle connections (by default GOMAXPROCS+1, resty's
// default, which is what the bridge runs with). On a shared state it runs
// no jobs lease, as the rows run no revoker on any backend: the jobs would
// only add work that no row measures.
func newInstance(ctx context.Context, env *env, store *bridge.Store, tokens bridge.TokenConfig, cacheSize int) (*instance, error) {
	cnt := newCounter(env.idleConns)
	metrics := bridge.NewMetrics(prometheus.NewRegistry(), store, time.Now)
	dc, err := directus.New(env.d.URL, env.d.AdminToken, directus.Options{Transport: cnt, Observe: metrics.ObserveDirectus})
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	unlimited := bridge.RateLimit{Rate: 1e9, Burst: 1e9}
	ex, err := bridge.NewExchanger(bridge.Options{
		Issuers: env.issuers, Tokens: tokens, Users: bridge.UserConfig{Namespace: env.ns.String()},
		Directus: dc, Store: store, Logger: log, VerifiedCacheSize: cacheSize, Metrics: metrics,
		Limits: bridge.LimitsConfig{PerIP: unlimited, PerClient: unlimited},
	})
	if err != nil {
		return nil, err
	}
	m, _, err := bridge.LoadMapper(ctx, dc, env.rules)
	if err != nil {
		return nil, err
	}
	ex.SetMapper(m)
	ex.DetectProvider(ctx)
	if err := ex.Warm(ctx); err != nil {
		return nil, err
	}
	u, stop, err := serve((&bridge.Server{Exchanger: ex, Logger: log}).Handler())
	if err != nil {
		return nil, err
	}
	return &instance{ex: ex, url: u + "/oauth/token", stop: stop, directus: cnt}, nil
}

func exchangeForm(subject string) string {
	return url.Values{
		"grant_type":         {bridge.GrantTypeTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {bridge.TokenTypeAccessToken},
	}.Encode()
}

// post sends one form POST and returns the status and the body.
func post(ctx context.Context, hc *http.Client, u, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// result is one measured row.
type result struct {
	ok, failed int
	firstErr   error
	elapsed    time.Duration
	lat        []time.Duration // sorted, successful requests only
	cpu        time.Duration   // this process (bridge + load generator)
	directus   int64           // Directus requests made by the bridge
}

// merge adds o, measured after r, to r; r.lat is left unsorted.
func (r *result) merge(o result) {
	r.ok += o.ok
	r.failed += o.failed
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	r.cpu += o.cpu
	r.directus += o.directus
}

func (r result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat)-1) * p)
	return r.lat[i]
}

func (r result) perOp(n int64) float64 {
	if r.ok+r.failed == 0 {
		return 0
	}
	return float64(n) / float64(r.ok+r.failed)
}

// load runs op from conc goroutines until dur has passed or maxOps calls
// were started; op gets its worker number and the call's index.
func load(ctx context.Context, conc int, dur time.Duration, maxOps int, op func(ctx context.Context, worker, i int) error) result {
	var next atomic.Int64
	var mu sync.Mutex
	var res result
	lats := make([][]time.Duration, conc)
	deadline := time.Now().Add(dur)
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= maxOps {
					return
				}
				t0 := time.Now()
				err := op(ctx, w, i)
				d := time.Since(t0)
				if err != nil {
					mu.Lock()
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
					mu.Unlock()
					continue
				}
				lats[w] = append(lats[w], d)
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.cpu = cpuTime() - cpu0
	for _, l := range lats {
		res.ok += len(l)
		res.lat = append(res.lat, l...)
	}
	slices.Sort(res.lat)
	return res
}

// cpuTime is the user + system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// expectOK turns a non-200 exchange answer into an error naming the OAuth
// error code.
func expectOK(status int, body []byte, err error) error {
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		s := string(body)
		if len(s) > 200 {
			s = s[:200]
		}
		return fmt.Errorf("status %d: %s", status, s)
	}
	return nil
}

var errNotRotated = errors.New("the exchange returned the previous token (no rotation)")
