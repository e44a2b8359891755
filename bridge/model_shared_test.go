package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate/pgstatetest"
)

// The model test with several replicas on one shared state: every step is
// taken by a replica the sequence draws (exchanges, revoker, watcher and
// reconciler runs, crashes of that replica), and the steps the model adds
// are races of two replicas on one client, faults of the state (a write
// refused, or applied with its answer lost, on any operation), a replica's
// change feed cut and mended, and the jobs lease renewed on a replica. The
// invariants are checked against the durable state, read afresh.

// replica is one bridge process on the shared state.
type replica struct {
	store  *Store
	ex     *Exchanger
	leader *Leader
	name   string
	feed   state.Shared // the instance under the faults wrapper, for CutFeed
}

// sharedFaults wraps a replica's state.Shared: the armed fault hits the
// at-th operation from then on, once.
type sharedFaults struct {
	mu   sync.Mutex
	kind string // "", "fail" (not applied), "lose" (a write applied, its answer lost)
	at   int
	seen int
}

func (f *sharedFaults) arm(kind string, at int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind, f.at, f.seen = kind, at, 0
}

// hit reports the fault the next operation meets.
func (f *sharedFaults) hit() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kind == "" {
		return ""
	}
	n := f.seen
	f.seen++
	if n != f.at {
		return ""
	}
	k := f.kind
	f.kind = ""
	return k
}

var errStateFault = errors.New("injected state fault")

type faultyShared struct {
	state.Shared
	f *sharedFaults
}

func (s faultyShared) Lock(ctx context.Context, keys []string) (func(), error) {
	if s.f.hit() != "" {
		return nil, errStateFault
	}
	return s.Shared.Lock(ctx, keys)
}

func (s faultyShared) Read(ctx context.Context, keys []string) ([]state.Versioned, error) {
	if s.f.hit() != "" {
		return nil, errStateFault
	}
	return s.Shared.Read(ctx, keys)
}

func (s faultyShared) Write(ctx context.Context, ws []state.Write) ([]int64, error) {
	switch s.f.hit() {
	case "fail":
		return nil, errStateFault
	case "lose":
		if _, err := s.Shared.Write(ctx, ws); err != nil {
			return nil, err
		}
		return nil, errStateFault
	}
	return s.Shared.Write(ctx, ws)
}

func (s faultyShared) SetMeta(ctx context.Context, key string, value []byte) error {
	if s.f.hit() != "" {
		return errStateFault
	}
	return s.Shared.SetMeta(ctx, key, value)
}

// startAll starts the bridge: one process, or every replica.
func (m *model) startAll() {
	if m.shared == nil {
		m.start()
		return
	}
	for i := range m.reps {
		m.cur = i
		m.start()
	}
	m.use(0)
}

// startReplica (re)starts replica m.cur on a new instance of the state.
func (m *model) startReplica() {
	b, err := m.shared()
	if err != nil {
		m.t.Fatalf("open the shared state: %v", err)
	}
	r := &replica{name: fmt.Sprintf("replica-%d-%d", m.cur, time.Now().UnixNano()), feed: b}
	fb := faultyShared{Shared: b, f: m.sfault}
	if r.store, err = NewSharedStore(fb, time.Minute, m.key); err != nil {
		m.t.Fatalf("load the shared state: %v", err)
	}
	r.ex = m.exchanger(r.store)
	r.leader = NewLeader(fb, r.name, 5*time.Second, slog.New(slog.DiscardHandler))
	r.ex.SetLeader(r.leader)
	r.leader.renew(context.Background())
	m.reps[m.cur] = r
	m.store, m.ex = r.store, r.ex
}

// use makes replica i the acting one.
func (m *model) use(i int) {
	m.cur = i
	m.store, m.ex = m.reps[i].store, m.reps[i].ex
}

// acting wraps a step: with replicas, a drawn replica takes it, and the
// replicas hear of each other's writes before the next step.
func (m *model) acting(step func(*rapid.T)) func(*rapid.T) {
	return func(rt *rapid.T) {
		if m.shared == nil {
			step(rt)
			return
		}
		m.use(rapid.IntRange(0, len(m.reps)-1).Draw(rt, "replica"))
		step(rt)
		m.sfault.arm("", 0)
		m.settle(rt)
	}
}

// settle waits until every replica whose feed works has heard of every
// write so far and read the records again (normally within a millisecond:
// the window the real feed has, which the e2e test measures).
func (m *model) settle(rt *rapid.T) {
	t0 := time.Now()
	for _, r := range m.reps {
		if m.cut[r] {
			continue
		}
		for {
			r.store.mu.RLock()
			done := r.store.sh.reset == 0 && len(r.store.sh.stale) == 0
			r.store.mu.RUnlock()
			if done && !r.feed.CoherentAt().Before(t0) {
				break
			}
			if time.Since(t0) > 10*time.Second {
				rt.Fatalf("after %s: replica %s did not hear of the other replicas' writes within 10s", m.last, r.name)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// durable returns the records as the state holds them, read afresh.
func (m *model) durable() map[string]Record {
	recs := map[string]Record{}
	if m.shared == nil {
		for _, r := range m.store.All() {
			recs[r.UserID] = r
		}
		return recs
	}
	if m.observer == nil {
		b, err := m.shared()
		if err != nil {
			m.t.Fatalf("open the shared state: %v", err)
		}
		m.observer = b
	}
	s, err := newStore(m.observer, true, m.key) // reads; never closed: the observer is the model's
	if err != nil {
		m.t.Fatalf("read the shared state: %v", err)
	}
	for _, r := range s.All() {
		recs[r.UserID] = r
	}
	return recs
}

// stateFault arms a fault of the acting replica's state, then exchanges.
func (m *model) stateFault(rt *rapid.T) {
	kind := rapid.SampledFrom([]string{"fail", "lose"}).Draw(rt, "state_fault")
	at := rapid.IntRange(0, 3).Draw(rt, "state_fault_at")
	m.sfault.arm(kind, at)
	m.exchangeWith(rt, "state:"+kind)
}

// race runs one client's exchange on two replicas at once.
func (m *model) race(rt *rapid.T) {
	i := rapid.IntRange(0, 2).Draw(rt, "issuer")
	client := rapid.SampledFrom(modelClients).Draw(rt, "client")
	scopes := rapid.SampledFrom(modelScopes[:3]).Draw(rt, "scopes") // none denied
	a := rapid.IntRange(0, len(m.reps)-1).Draw(rt, "replica_a")
	b := (a + 1 + rapid.IntRange(0, len(m.reps)-2).Draw(rt, "replica_b")) % len(m.reps)
	ti, cfg := m.issuer(i)
	uid := UserID(m.reps[a].ex.namespace, &cfg, client)
	m.last = fmt.Sprintf("race issuer=%s client=%q scopes=%v replicas=%d,%d user=%s", cfg.Name, client, scopes, a, b, uid)
	claims := map[string]any{"iss": ti.URL, "sub": client, "aud": testAudience, "iat": m.now.Add(-time.Minute).Unix(),
		"exp": m.now.Add(time.Hour).Unix(), "scope": strings.Join(scopes, " ")}
	req := Request{SubjectToken: ti.sign(m.t, claims)}
	before := m.fake.Snapshot()
	var wg sync.WaitGroup
	res := make([]*Result, 2)
	errs := make([]error, 2)
	for k, r := range []int{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[k], errs[k] = m.reps[r].ex.Exchange(context.Background(), req)
		}()
	}
	wg.Wait()
	snap := m.fake.Snapshot()
	u, there := snap[uid]
	p := pair{cfg.Issuer, client}
	for k, err := range errs {
		if err != nil {
			var ee *Error
			if !errors.As(err, &ee) || ee.Status >= 500 {
				rt.Fatalf("%s: replica %d failed without a fault: %v", m.last, []int{a, b}[k], err)
			}
			reserved := ee.Code == "invalid_request" && m.reservedClient(cfg, client)
			if !reserved && !m.refusable(before, uid, cfg, client) && !m.refusable(snap, uid, cfg, client) {
				rt.Fatalf("%s: refused without a reason: %v", m.last, err)
			}
			continue
		}
		if q, ok := m.users[uid]; ok && q != p {
			rt.Fatalf("%s: user %s handed to %v and %v", m.last, uid, q, p)
		}
		m.users[uid], m.tokens[res[k].Token] = p, p
		if m.unobserved[uid] {
			continue
		}
		if !there || u.Token == nil || *u.Token != res[k].Token || u.Status != "active" {
			rt.Fatalf("%s: replica %d answered a token Directus does not hold", m.last, []int{a, b}[k])
		}
	}
	if errs[0] == nil && errs[1] == nil && res[0].Token != res[1].Token {
		rt.Fatalf("%s: two live tokens handed out for one client at once", m.last)
	}
	m.settle(rt)
}

// cutFeed breaks or mends a replica's change feed (in-memory state only).
func (m *model) cutFeed(rt *rapid.T) {
	ms, ok := m.mem.(*memstate.SharedState)
	if !ok {
		return
	}
	r := m.reps[rapid.IntRange(0, len(m.reps)-1).Draw(rt, "feed_replica")]
	if m.cut[r] {
		m.last = "mend the change feed of " + r.name
		ms.RestoreFeed(r.feed)
		delete(m.cut, r)
	} else {
		m.last = "cut the change feed of " + r.name
		ms.CutFeed(r.feed)
		m.cut[r] = true
	}
	m.settle(rt)
}

// lease renews (or takes) the jobs lease on a drawn replica.
func (m *model) lease(rt *rapid.T) {
	r := m.reps[rapid.IntRange(0, len(m.reps)-1).Draw(rt, "lease_replica")]
	m.last = "renew the jobs lease on " + r.name
	r.leader.renew(context.Background())
}

// crashReplica crashes and restarts the acting replica.
func (m *model) crashReplica(rt *rapid.T) {
	delete(m.cut, m.reps[m.cur])
	m.crash(rt)
}

func TestExchangeStateMachineReplicas(t *testing.T) {
	runReplicas(t, func() (func() (state.Shared, error), any) {
		ms := memstate.NewShared()
		return ms.Open, ms
	}, true)
}

// TestExchangeStateMachineReplicasOnPostgres: the same with the replicas
// on one PostgreSQL schema (the test stack's), its change feed and locks.
func TestExchangeStateMachineReplicasOnPostgres(t *testing.T) {
	schemas := pgstatetest.NewSchemas(t)
	// Each step waits for the feed to catch up: ping often.
	defer func(d time.Duration) { pgstate.PingInterval = d }(pgstate.PingInterval)
	pgstate.PingInterval = 5 * time.Millisecond
	runReplicas(t, func() (func() (state.Shared, error), any) {
		dsn := schemas.Fresh(t)
		return func() (state.Shared, error) { return pgstate.OpenShared(context.Background(), dsn) }, nil
	}, false)
}

func runReplicas(t *testing.T, fresh func() (func() (state.Shared, error), any), leaseByModelClock bool) {
	defer func(w time.Duration) { syncWait = w }(syncWait)
	syncWait = 20 * time.Millisecond // a cut feed: read everything soon
	mi := newModelIssuers(t)
	rapid.Check(t, func(rt *rapid.T) {
		open, mem := fresh()
		n := rapid.IntRange(2, 3).Draw(rt, "replicas")
		m := newReplicaModel(t, mi, rt, open, mem, n, leaseByModelClock)
		defer m.close()
		rt.Repeat(map[string]func(*rapid.T){
			"exchange":    m.acting(m.exchange),
			"exchange2":   m.acting(m.exchange),
			"race":        m.race,
			"state fault": m.acting(m.stateFault),
			"revoke":      m.acting(m.revoke),
			"watch":       m.acting(m.watch),
			"reconcile":   m.acting(m.reconcile),
			"crash":       m.acting(m.crashReplica),
			"reload":      m.reloadAll,
			"clock":       m.step,
			"admin":       m.adminAct,
			"hook user":   m.seedHookUser,
			"feed":        m.cutFeed,
			"lease":       m.lease,
			"":            m.check,
		})
	})
}

// reloadAll puts other rules in force on every replica.
func (m *model) reloadAll(rt *rapid.T) {
	m.reload(rt)
	for _, r := range m.reps {
		r.ex.SetMapper(m.mapper())
	}
}
