package bridge

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the bridge's Prometheus metrics. Label values are bounded:
// configured issuer names, fixed outcomes, OAuth error codes, Directus
// operation names; never client ids or token data. A nil *Metrics records
// nothing.
type Metrics struct {
	exchanges        *prometheus.CounterVec
	exchangeSeconds  *prometheus.HistogramVec
	directusSeconds  *prometheus.HistogramVec
	directusErrors   *prometheus.CounterVec
	jwksFetches      *prometheus.CounterVec
	tokensRevoked    prometheus.Counter
	watchNoticed     prometheus.Counter
	rulesBlocked     prometheus.Gauge
	reconcileRuns    *prometheus.CounterVec
	reconcileActions *prometheus.CounterVec
	rateLimited      *prometheus.CounterVec

	// exchangeChildren caches the children of exchanges and
	// exchangeSeconds by their label values (exchangeLabels ->
	// *exchangeChild), so that an exchange does not pay for hashing and
	// validating its labels twice: with one of these per request, the
	// returning client's metrics cost a map read. The label values are
	// bounded (see above), and so is the cache.
	exchangeChildren sync.Map
	// lastExchange is the child used last: a run of exchanges with the
	// same labels (returning clients of one issuer) compares three strings
	// instead of hashing them.
	lastExchange atomic.Pointer[exchangeChild]
}

type exchangeLabels struct{ issuer, outcome, code string }

type exchangeChild struct {
	labels  exchangeLabels
	count   prometheus.Counter
	seconds prometheus.Observer
}

// NewMetrics creates the metrics and registers them, plus a gauge of live
// tokens read from store at scrape time.
func NewMetrics(reg prometheus.Registerer, store *Store, now func() time.Time) *Metrics {
	m := &Metrics{
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directus_bridge_exchanges_total",
			Help: "Token exchanges by issuer, outcome (issued, reused, rotated, updated, refused, failed) and error code.",
		}, []string{"issuer", "outcome", "error"}),
		exchangeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "directus_bridge_exchange_duration_seconds",
			Help:    "Token exchange latency by outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
		directusSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "directus_bridge_directus_request_duration_seconds",
			Help:    "Directus REST request latency by operation and status class.",
			Buckets: prometheus.DefBuckets,
		}, []string{"op", "status"}),
		directusErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directus_bridge_directus_errors_total",
			Help: "Failed Directus requests by operation and status class (0xx: not reached).",
		}, []string{"op", "status"}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directus_bridge_jwks_fetches_total",
			Help: "JWKS fetches by issuer and result.",
		}, []string{"issuer", "result"}),
		tokensRevoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "directus_bridge_tokens_revoked_total",
			Help: "Expired static tokens cleared in Directus by the revoker.",
		}),
		rulesBlocked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "directus_bridge_rules_blocked",
			Help: "Mapping rules that deny because their grant has admin access in Directus without allow_admin.",
		}),
		watchNoticed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "directus_bridge_watch_noticed_total",
			Help: "Changes to machine users made in Directus by others, noticed in its activity log.",
		}),
		reconcileRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directus_bridge_reconcile_runs_total",
			Help: "Reconcile runs by result (ok, error).",
		}, []string{"result"}),
		reconcileActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directus_bridge_reconcile_actions_total",
			Help: "Reconcile actions applied, by action.",
		}, []string{"action"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directus_bridge_rate_limited_total",
			Help: "Exchanges refused by a rate limit, by limit (ip, client).",
		}, []string{"limit"}),
	}
	reg.MustRegister(m.exchanges, m.exchangeSeconds, m.directusSeconds, m.directusErrors, m.jwksFetches,
		m.tokensRevoked, m.watchNoticed, m.rulesBlocked, m.reconcileRuns, m.reconcileActions, m.rateLimited,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "directus_bridge_live_tokens",
			Help: "Issued static tokens that have not expired yet.",
		}, func() float64 { return float64(store.LiveTokens(now())) }))
	return m
}

// names returns the names of all the metrics, registered or not yet observed.
func (m *Metrics) names() []string {
	ch := make(chan *prometheus.Desc, 32)
	for _, c := range []prometheus.Collector{m.exchanges, m.exchangeSeconds, m.directusSeconds, m.directusErrors,
		m.jwksFetches, m.tokensRevoked, m.watchNoticed, m.rulesBlocked, m.reconcileRuns, m.reconcileActions, m.rateLimited} {
		c.Describe(ch)
	}
	close(ch)
	var out []string
	for d := range ch {
		s := d.String() // Desc{fqName: "name", ...}
		if _, rest, ok := strings.Cut(s, `fqName: "`); ok {
			name, _, _ := strings.Cut(rest, `"`)
			out = append(out, name)
		}
	}
	return append(out, "directus_bridge_live_tokens")
}

func (m *Metrics) exchange(issuer, outcome, code string, d time.Duration) {
	if m == nil {
		return
	}
	if issuer == "" {
		issuer = "unknown"
	}
	k := exchangeLabels{issuer, outcome, code}
	ch := m.lastExchange.Load()
	if ch == nil || ch.labels != k {
		c, ok := m.exchangeChildren.Load(k)
		if !ok {
			c, _ = m.exchangeChildren.LoadOrStore(k, &exchangeChild{labels: k,
				count:   m.exchanges.WithLabelValues(issuer, outcome, code),
				seconds: m.exchangeSeconds.WithLabelValues(outcome),
			})
		}
		ch = c.(*exchangeChild)
		m.lastExchange.Store(ch)
	}
	ch.count.Inc()
	ch.seconds.Observe(d.Seconds())
}

// ObserveDirectus records one Directus round trip; it fits
// directus.Options.Observe.
func (m *Metrics) ObserveDirectus(op string, status int, d time.Duration) {
	if m == nil {
		return
	}
	class := strconv.Itoa(status/100) + "xx"
	m.directusSeconds.WithLabelValues(op, class).Observe(d.Seconds())
	if status == 0 || status >= 400 {
		m.directusErrors.WithLabelValues(op, class).Inc()
	}
}

func (m *Metrics) jwksFetch(issuer string, ok bool) {
	if m == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "error"
	}
	m.jwksFetches.WithLabelValues(issuer, result).Inc()
}

func (m *Metrics) revoked(n int) {
	if m != nil && n > 0 {
		m.tokensRevoked.Add(float64(n))
	}
}

func (m *Metrics) blocked(n int) {
	if m != nil {
		m.rulesBlocked.Set(float64(n))
	}
}

func (m *Metrics) watched(n int) {
	if m != nil && n > 0 {
		m.watchNoticed.Add(float64(n))
	}
}

func (m *Metrics) reconciled(rep *Report, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reconcileRuns.WithLabelValues(result).Inc()
	if rep == nil || rep.DryRun {
		return
	}
	for _, c := range rep.Changes {
		m.reconcileActions.WithLabelValues(c.Action).Inc()
	}
}

func (m *Metrics) limited(limit string) {
	if m != nil {
		m.rateLimited.WithLabelValues(limit).Inc()
	}
}
