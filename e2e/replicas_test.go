package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// The tests of several serve replicas (state.shared) on one PostgreSQL
// state, against the real Directus versions of the stack. They log what
// they measure (takeover, revocation delay, recovery, staleness) with
// "measured:" for the documentation; they assert only correctness, with
// bounds generous enough for a busy 2-core machine.

// TestReplicasFirstExchanges: three replicas, 30 new clients, each
// exchanged 10 times at once over all three replicas. Per-user locks in
// the database make one machine user and one token per client, the same
// from every replica; afterwards every replica hands each token out from
// memory, without a Directus request.
func TestReplicasFirstExchanges(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		pg := newPGState(t, base)
		rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		reps := startReplicas(t, d, 3, func(port int) string {
			return pgConfig(t, d, port, "10m", rules, "shared: true")
		})
		const nClients, per, workers = 30, 10, 60
		clients := newClients(t, nClients)

		// Job i is client i/per's (i%per)-th exchange, at replica i%3: the
		// 60 workers run six clients' ten exchanges at once, each client's
		// over all three replicas.
		type answer struct {
			r        exchanged
			retried  int // 503s with Retry-After before the last answer
			replica  int
			duration time.Duration
		}
		answers := make([]answer, nClients*per)
		jobs := make(chan int)
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					c, rep := clients[i/per], i%len(reps)
					a := answer{replica: rep}
					began := time.Now()
					// A 503 with Retry-After is the design's answer to a
					// lost conditional write or a lock not had in time:
					// allowed, retried as a client would (Retry-After
					// capped at 2s), at most 3 times.
					for {
						a.r = tryExchange(reps[rep], c.subject, 30*time.Second)
						if a.r.status != 503 || a.r.retryAfter == "" || a.retried == 3 {
							break
						}
						a.retried++
						s, _ := strconv.Atoi(a.r.retryAfter)
						time.Sleep(min(time.Duration(s)*time.Second, 2*time.Second))
					}
					a.duration = time.Since(began)
					answers[i] = a
				}
			}()
		}
		for i := range answers {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		took := time.Since(start)

		// Every answer 200; 503s (retried) stay rare: at most 5% of the
		// exchanges, each retried into a 200.
		retried, slowest := 0, time.Duration(0)
		for i, a := range answers {
			retried += a.retried
			slowest = max(slowest, a.duration)
			if a.r.status != 200 || a.r.token() == "" {
				t.Errorf("exchange %d (client %d at replica %d): %d %v after %d retries", i, i/per, a.replica, a.r.status, a.r.body, a.retried)
			}
		}
		t.Logf("measured: %d first exchanges of %d clients over %d replicas in %s (slowest %s), %d answers 503 (retried)",
			len(answers), nClients, len(reps), took.Round(time.Millisecond), slowest.Round(time.Millisecond), retried)
		if retried > len(answers)/20 {
			t.Errorf("%d answers were 503: more than 5%% of %d", retried, len(answers))
		}
		if t.Failed() {
			t.FailNow()
		}
		// One token per client, the same from every replica.
		tokens := make([]string, nClients)
		for c := range clients {
			seen := map[string][]int{}
			for k := range per {
				a := answers[c*per+k]
				seen[a.r.token()] = append(seen[a.r.token()], a.replica)
			}
			if len(seen) != 1 {
				t.Errorf("client %d got %d distinct tokens from its %d exchanges (replicas per token: %v)", c, len(seen), per, replicasPerToken(seen))
			}
			tokens[c] = answers[c*per].r.token()
		}
		// Exactly one machine user per client in Directus, each token its
		// client's.
		users, err := f.admin.ListUsers(ctx, directus.UserFilter{Role: f.reader.ID}, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, c := range clients {
			want[c.user] = true
		}
		for _, u := range users {
			if !want[u.ID] {
				t.Errorf("Directus has a user %s of the reader role that is no client's", u.ID)
			}
			if !u.HasToken {
				t.Errorf("the user %s has no token in Directus", u.ID)
			}
		}
		if len(users) != nClients {
			t.Errorf("Directus has %d users of the reader role, want %d", len(users), nClients)
		}
		for c, tok := range tokens {
			if got := f.me(t, tok); got != clients[c].user {
				t.Errorf("client %d's token against Directus: GET /users/me is user %q, want %s", c, got, clients[c].user)
			}
		}
		// 30 records in PostgreSQL, one per client's user.
		keys := stateKeys(t, pg.dsn, pg.schema)
		if len(keys) != nClients {
			t.Errorf("the state has %d records, want %d", len(keys), nClients)
		}
		for _, c := range clients {
			if !keys[c.user] {
				t.Errorf("the state has no record of %s", c.user)
			}
		}
		if t.Failed() {
			t.FailNow()
		}

		// Returning clients: each replica hands each token out again,
		// without writing to Directus. The watcher (on the lease holder)
		// reads Directus's activity log on its own: its requests are left
		// out of the count.
		background := []string{`op="list_activity"`, `op="last_activity"`}
		before := make([]map[string]float64, len(reps))
		for i, p := range reps {
			before[i] = metrics(t, p)
		}
		for c, cl := range clients {
			for i, p := range reps {
				r := p.exchange(t, cl.subject)
				if r.status != 200 || r.token() != tokens[c] {
					t.Errorf("client %d's second exchange at replica %d: %d, same token %v %v", c, i, r.status, r.token() == tokens[c], r.body)
				}
			}
		}
		for i, p := range reps {
			after := metrics(t, p)
			reused := metricSum(after, "directus_bridge_exchanges_total", []string{`outcome="reused"`}, nil) -
				metricSum(before[i], "directus_bridge_exchanges_total", []string{`outcome="reused"`}, nil)
			if reused != nClients {
				t.Errorf("replica %d: %v exchanges reused a token, want %d", i, reused, nClients)
			}
			requests := metricSum(after, "directus_bridge_directus_request_duration_seconds_count", nil, background) -
				metricSum(before[i], "directus_bridge_directus_request_duration_seconds_count", nil, background)
			if requests != 0 {
				t.Errorf("replica %d made %v Directus requests while handing out live tokens again, want 0", i, requests)
			}
		}
	})
}

// replicasPerToken lists, per distinct token (by position, never the
// token), the replicas that answered it.
func replicasPerToken(seen map[string][]int) [][]int {
	var out [][]int
	for _, r := range seen {
		out = append(out, r)
	}
	return out
}

// TestReplicasRevocationSurvivesLeaseHolder: the replica holding the jobs
// lease is killed (-9); another takes the lease within a few revoke
// intervals and revokes in Directus every token issued before the kill
// once it expires, while the survivors keep serving.
func TestReplicasRevocationSurvivesLeaseHolder(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		newPGState(t, base)
		const ttl, revokeInterval = 12 * time.Second, 2 * time.Second
		rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		reps := startReplicas(t, d, 3, func(port int) string {
			return withTokens(t, pgConfig(t, d, port, "12s", rules, "shared: true"), "12s", "1s", "2s")
		})
		holder := -1
		for deadline := time.Now().Add(15 * time.Second); holder < 0; time.Sleep(50 * time.Millisecond) {
			for i, p := range reps {
				if strings.Contains(p.logs.String(), leaseTaken) {
					if holder >= 0 {
						t.Fatalf("replicas %d and %d both took the jobs lease", holder, i)
					}
					holder = i
				}
			}
			if holder < 0 && time.Now().After(deadline) {
				t.Fatal("no replica took the jobs lease within 15s")
			}
		}
		var survivors []*process
		for i, p := range reps {
			if i != holder {
				survivors = append(survivors, p)
			}
		}

		// Tokens issued through every replica, the holder too.
		type issued struct {
			client         subjectClient
			token          string
			sent, answered time.Time
		}
		var live []issued
		for i, c := range newClients(t, 6) {
			sent := time.Now()
			r := reps[i%len(reps)].exchange(t, c.subject)
			if r.status != 200 || r.token() == "" {
				t.Fatalf("client %d's exchange at replica %d: %d %v", i, i%len(reps), r.status, r.body)
			}
			live = append(live, issued{c, r.token(), sent, time.Now()})
		}
		for i, l := range live {
			if f.me(t, l.token) != l.client.user {
				t.Fatalf("client %d's token does not work against Directus", i)
			}
		}

		kill(t, reps[holder])
		killed := time.Now()
		// The survivors keep serving while the lease passes: returning
		// clients get their token, a new client is recorded.
		newcomer := newClients(t, 1)[0]
		next, served, took := 0, 0, time.Duration(0)
		var taker *process
		for taker == nil {
			for _, p := range survivors {
				if strings.Contains(p.logs.String(), leaseTaken) {
					taker, took = p, time.Since(killed)
				}
			}
			if taker == nil && time.Since(killed) > 30*time.Second {
				t.Fatalf("no surviving replica took the jobs lease within 30s of the holder's death:\n%s\n%s", survivors[0].logs.String(), survivors[1].logs.String())
			}
			// Until the tokens near rotation (rotate_before 1s).
			if time.Since(live[0].sent) < ttl-3*time.Second {
				l := live[next%len(live)]
				p := survivors[next%len(survivors)]
				next++
				if r, _ := timedExchange(t, p, l.client.subject, 20*time.Second); r.status != 200 || r.token() != l.token {
					t.Fatalf("a returning client at a survivor while the lease passes: %d, same token %v %v", r.status, r.token() == l.token, r.body)
				}
				served++
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("measured: a survivor took the jobs lease %s after the holder was killed (lease TTL = revoke_interval %s); %d returning exchanges served meanwhile",
			took.Round(time.Millisecond), revokeInterval, served)
		sent := time.Now()
		r := survivors[0].exchange(t, newcomer.subject)
		if r.status != 200 || r.token() == "" {
			t.Fatalf("a new client at a survivor after the kill: %d %v", r.status, r.body)
		}
		if f.me(t, r.token()) != newcomer.user {
			t.Fatal("the new client's token does not work against Directus")
		}
		live = append(live, issued{newcomer, r.token(), sent, time.Now()})

		// Every token is revoked in Directus once it expires, by a
		// survivor. Bound: the expiry plus 20s (expected: within one
		// revoke interval, the lease having passed long before).
		revokedAt := make([]time.Time, len(live))
		left := len(live)
		deadline := live[len(live)-1].answered.Add(ttl + 20*time.Second)
		for left > 0 {
			for i, l := range live {
				if !revokedAt[i].IsZero() {
					continue
				}
				st := f.status(t, l.token)
				if st == 200 {
					continue
				}
				revokedAt[i] = time.Now()
				left--
				if st != 401 {
					t.Errorf("token %d after its revocation: GET /users/me %d, want 401", i, st)
				}
			}
			if left > 0 && time.Now().After(deadline) {
				t.Fatalf("%d tokens still work 20s after they expired (ttl %s): nobody revoked them\n%s", left, ttl, taker.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		var delays []string
		for i, l := range live {
			if early := l.sent.Add(ttl).Sub(revokedAt[i]); early > time.Second {
				t.Errorf("token %d was revoked %s before its expiry", i, early.Round(time.Millisecond))
			}
			// From the latest the expiry can be (the answer + ttl).
			delays = append(delays, revokedAt[i].Sub(l.answered.Add(ttl)).Round(10*time.Millisecond).String())
		}
		t.Logf("measured: tokens revoked after their expiry by (first %d issued before the kill): %s", len(live)-1, strings.Join(delays, " "))
		if n := strings.Count(taker.logs.String(), "token revoked"); n < len(live) {
			t.Errorf("the new lease holder logged %d revocations, want at least %d", n, len(live))
		}
		for i, p := range survivors {
			running(t, fmt.Sprintf("survivor %d", i), p)
		}
	})
}

// TestReplicasDatabaseRestart: under a steady load of new and returning
// clients over three replicas the state's PostgreSQL goes away (every
// connection closed, new ones refused: what a restart looks like to the
// bridge), then comes back. While it is away a new client gets 503 with
// Retry-After and nothing reaches Directus for it; a returning client
// gets its live token from memory for at most state.max_stale, then 503.
// Once it is back the same replicas serve again, every token handed out
// works, and every machine user with a token in Directus has a record.
func TestReplicasDatabaseRestart(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		direct, schema := base.FreshSchema(t)
		du, _ := url.Parse(direct)
		proxy := newTCPProxy(t, du.Host)
		key := make([]byte, 32)
		rand.Read(key)
		t.Setenv("DIRECTUS_BRIDGE_STATE_DSN", proxy.viaProxy(t, direct))
		t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", base64.StdEncoding.EncodeToString(key))
		const maxStale = 2 * time.Second
		rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		reps := startReplicas(t, d, 3, func(port int) string {
			return pgConfig(t, d, port, "10m", rules, "shared: true, max_stale: 2s")
		})

		// Returning clients: one token each before the load starts.
		returning := newClients(t, 6)
		tokenOf := map[string]string{} // client id -> its token (mu)
		for i, c := range returning {
			r := reps[i%len(reps)].exchange(t, c.subject)
			if r.status != 200 || r.token() == "" {
				t.Fatalf("returning client %d's first exchange: %d %v", i, r.status, r.body)
			}
			tokenOf[c.id] = r.token()
		}
		fresh := newClients(t, 80) // new clients, taken one by one
		probes := newClients(t, len(reps))

		type answer struct {
			client      subjectClient
			isNew       bool // the client had no token when this began
			first       bool // the client's first exchange
			replica     int
			began, done time.Time
			r           exchanged
		}
		var (
			mu        sync.Mutex
			answers   []answer
			known     = slices.Clone(returning)
			pending   []subjectClient // new clients refused so far
			nextFresh int
			stop      atomic.Bool
			wg        sync.WaitGroup
		)
		// pick returns a client: one in four a new one (refused before, or
		// never tried: first), else a known (returning) one.
		pick := func(n int) (c subjectClient, isNew, first bool) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case n%4 != 1:
			case len(pending) > 0 && (n%8 == 1 || nextFresh == len(fresh)):
				c, pending = pending[0], pending[1:]
				return c, true, false
			case nextFresh < len(fresh):
				nextFresh++
				return fresh[nextFresh-1], true, true
			}
			return known[n%len(known)], false, false
		}
		const workers = 4
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := w; !stop.Load(); n += workers {
					c, isNew, first := pick(n)
					rep := n % len(reps)
					a := answer{client: c, isNew: isNew, first: first, replica: rep, began: time.Now()}
					a.r = tryExchange(reps[rep], c.subject, 25*time.Second)
					a.done = time.Now()
					mu.Lock()
					answers = append(answers, a)
					if isNew {
						if a.r.status == 200 {
							tokenOf[c.id] = a.r.token()
							known = append(known, c)
						} else {
							pending = append(pending, c)
						}
					}
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		stopLoad := func() {
			if !stop.Swap(true) {
				wg.Wait()
			}
		}
		t.Cleanup(stopLoad)

		time.Sleep(2 * time.Second)
		// The cut begins when cutOff is called (an answer may come while it
		// closes the connections) and is complete when it returns.
		cutBegan := time.Now()
		proxy.cutOff(tcpRefuse)
		cut := time.Now()
		// Away for longer than max_stale, so that the returning clients'
		// answers from memory end while it is away.
		time.Sleep(maxStale + 4*time.Second)
		// Nothing reached Directus for a new client whose first exchange
		// began after the cut (one refused before may have been created
		// in Directus before its record could be confirmed).
		mu.Lock()
		var cutNew []string
		for _, a := range answers {
			if a.first && a.began.After(cut) {
				cutNew = append(cutNew, a.client.user)
			}
		}
		mu.Unlock()
		if len(cutNew) == 0 {
			t.Fatal("no new client tried while the database was away: the test proves nothing")
		}
		if users, err := f.admin.ListUsers(ctx, directus.UserFilter{IDs: cutNew}, -1, 0); err != nil || len(users) != 0 {
			t.Errorf("%d users in Directus of new clients tried while the database was away (%v), want none", len(users), err)
		}
		proxy.restore()
		restored := time.Now()

		// Each replica serves a new client again, not restarted.
		recovered := make([]time.Duration, len(reps))
		for i, p := range reps {
			for {
				began := time.Now()
				r, _ := timedExchange(t, p, probes[i].subject, 25*time.Second)
				if r.status == 200 {
					recovered[i] = time.Since(restored)
					mu.Lock()
					tokenOf[probes[i].id] = r.token()
					answers = append(answers, answer{client: probes[i], isNew: true, first: true, replica: i, began: began, done: time.Now(), r: r})
					mu.Unlock()
					break
				}
				if r.status != 503 || r.retryAfter == "" {
					t.Fatalf("replica %d after the database came back: %d %v", i, r.status, r.body)
				}
				if time.Since(restored) > 30*time.Second {
					t.Fatalf("replica %d still refuses a new client 30s after the database came back:\n%s", i, p.logs.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		time.Sleep(2 * time.Second) // the load goes on with the database back
		stopLoad()
		for i, p := range reps {
			running(t, fmt.Sprintf("replica %d", i), p)
		}

		// Every answer: 200 with the client's one token, or 503 with
		// Retry-After. No token from memory once max_stale has passed
		// since the cut (with 500ms for the clock of the feed's last ping).
		count := map[string]int{}
		for _, a := range answers {
			phase := "before"
			switch {
			case a.began.After(restored):
				phase = "after"
			case a.began.After(cutBegan):
				phase = "away"
			}
			kind := "returning"
			if a.isNew {
				kind = "new"
			}
			count[fmt.Sprintf("%s %s %d", phase, kind, a.r.status)]++
			switch {
			case a.r.status == 200:
				if a.r.token() == "" || a.r.token() != tokenOf[a.client.id] {
					t.Errorf("%s: %s client at replica %d: 200 with another token than the client's one", phase, kind, a.replica)
				}
				// One answered after the restore may have waited for it.
				away := phase == "away" && a.done.Before(restored)
				if away && a.isNew && a.began.After(cut) {
					t.Errorf("a new client got a token while the database was away (began %s after the cut)", a.began.Sub(cut).Round(time.Millisecond))
				}
				if away && a.began.After(cut.Add(maxStale+500*time.Millisecond)) {
					t.Errorf("a returning client got its token from memory %s after the cut, beyond state.max_stale %s", a.began.Sub(cut).Round(time.Millisecond), maxStale)
				}
			case a.r.status == 503 && a.r.retryAfter != "":
				// One in flight when the cut came may be refused.
				if phase == "before" && a.done.Before(cutBegan) {
					t.Errorf("%s client at replica %d answered 503 before the cut (began %s, answered %s before it): %v\n%s", kind, a.replica,
						cutBegan.Sub(a.began).Round(time.Millisecond), cutBegan.Sub(a.done).Round(time.Millisecond), a.r.body, reps[a.replica].logs.String())
				}
			default:
				t.Errorf("%s: %s client at replica %d: %d (Retry-After %q) %v, want 200 or 503 with Retry-After", phase, kind, a.replica, a.r.status, a.r.retryAfter, a.r.body)
			}
		}
		// Answers from memory while the database was away (a returning
		// client's 200 answered before the restore).
		fromMemory, lastMemory := 0, time.Duration(0)
		for _, a := range answers {
			if a.r.status == 200 && !a.isNew && a.began.After(cutBegan) && a.done.Before(restored) {
				fromMemory++
				lastMemory = max(lastMemory, a.done.Sub(cut))
			}
		}
		var rec []string
		for _, d := range recovered {
			rec = append(rec, d.Round(time.Millisecond).String())
		}
		var summary []string
		for _, k := range slices.Sorted(maps.Keys(count)) {
			summary = append(summary, fmt.Sprintf("%s: %d", k, count[k]))
		}
		t.Logf("measured: answers by phase, kind and status: %s", strings.Join(summary, ", "))
		t.Logf("measured: %d tokens from memory while the database was away, the last %s after the cut (max_stale %s); the replicas served a new client again %s after the database came back (probed one after the other)",
			fromMemory, lastMemory.Round(time.Millisecond), maxStale, strings.Join(rec, " "))
		if count["away new 503"] == 0 || count["away returning 503"] == 0 {
			t.Errorf("while the database was away no new client or no returning client was refused: the test proves nothing")
		}

		// Every token handed out still works, each its client's.
		for id, tok := range tokenOf {
			if got := f.me(t, tok); got != userID(id+"@clients") {
				t.Errorf("the token of client %s against Directus: user %q, want %s", id, got, userID(id+"@clients"))
			}
		}
		// No token unknown to the state: every machine user with a token
		// has a record.
		users, err := f.admin.ListUsers(ctx, directus.UserFilter{Role: f.reader.ID, HasToken: directus.Ptr(true)}, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		keys := stateKeys(t, direct, schema)
		for _, u := range users {
			if !keys[u.ID] {
				t.Errorf("the machine user %s holds a token in Directus and has no record in the state", u.ID)
			}
		}
		if len(users) < len(tokenOf) {
			t.Errorf("%d machine users with a token in Directus, fewer than the %d clients given one", len(users), len(tokenOf))
		}
		t.Logf("%d machine users with a token, %d records, %d clients given a token", len(users), len(keys), len(tokenOf))
	})
}

// TestReplicasStaleness measures the staleness window: replica B rotates
// client X's token (rotate_before close to the TTL, so the next exchange
// rotates), then replica A is asked for X at once. A must answer the new
// token (or a newer one, or 503), never one Directus no longer accepts --
// unless the rotation was committed more than state.max_stale before A's
// answer, which would break the documented bound. How often A answered the
// old token, and whether Directus still took it then, is logged.
func TestReplicasStaleness(t *testing.T) {
	base := postgresSchemas(t)
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		newPGState(t, base)
		const maxStale = 2 * time.Second
		// A token may be handed out again for 500ms after it was minted
		// (ttl - rotate_before); after that the next exchange rotates it.
		const reuseFor = 500 * time.Millisecond
		rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		reps := startReplicas(t, d, 2, func(port int) string {
			return withTokens(t, pgConfig(t, d, port, "2s", rules, "shared: true, max_stale: 2s"), "2s", "1500ms", "300ms")
		})
		x := newClients(t, 1)[0]
		first := reps[0].exchange(t, x.subject)
		if first.status != 200 || first.token() == "" {
			t.Fatalf("X's first exchange: %d %v", first.status, first.body)
		}
		// minted: the latest the current token can have been minted.
		current, minted := first.token(), time.Now()
		const rounds = 50
		delays := []time.Duration{0, time.Millisecond, 5 * time.Millisecond}
		type oldAnswer struct {
			round    int
			delay    time.Duration
			after    time.Duration // from B's answer to A's
			accepted bool          // Directus still took the old token then
		}
		var (
			olds                        []oldAnswer
			fresh, newer, refused, same int
		)
		for i := range rounds {
			a, b := reps[(i+1)%2], reps[i%2]
			// Let the current token become rotatable.
			time.Sleep(time.Until(minted.Add(reuseFor + 50*time.Millisecond)))
			bSent := time.Now()
			rb, _ := timedExchange(t, b, x.subject, 20*time.Second)
			bDone := time.Now()
			if rb.status == 503 && rb.retryAfter != "" {
				refused++
				continue
			}
			if rb.status != 200 || rb.token() == "" {
				t.Fatalf("round %d: the rotation at B: %d %v", i, rb.status, rb.body)
			}
			if rb.token() == current {
				// Not rotated (B's clock or memory saw more time left):
				// nothing to measure this round.
				same++
				continue
			}
			old := current
			current, minted = rb.token(), bDone
			delay := delays[i%len(delays)]
			if delay > 0 {
				time.Sleep(delay)
			}
			ra, _ := timedExchange(t, a, x.subject, 20*time.Second)
			aDone := time.Now()
			switch {
			case ra.status == 503 && ra.retryAfter != "":
				refused++
			case ra.status != 200 || ra.token() == "":
				t.Fatalf("round %d: the exchange at A: %d %v", i, ra.status, ra.body)
			case ra.token() == current:
				fresh++
			case ra.token() == old:
				accepted := f.status(t, old) == 200
				olds = append(olds, oldAnswer{i, delay, aDone.Sub(bDone), accepted})
				if !accepted && aDone.Sub(bSent) > maxStale {
					t.Errorf("round %d: A answered the token B had replaced %s after B began, beyond state.max_stale %s, and Directus no longer accepts it",
						i, aDone.Sub(bSent).Round(time.Millisecond), maxStale)
				}
			default:
				// A rotated again (its request came after the new token's
				// reuse window): a newer token, fine if it works.
				newer++
				current, minted = ra.token(), aDone
			}
			if ra.status == 200 && ra.token() != old {
				if got := f.me(t, ra.token()); got != x.user {
					t.Errorf("round %d: A's token against Directus: user %q, want %s", i, got, x.user)
				}
			}
		}
		var detail []string
		for _, o := range olds {
			detail = append(detail, fmt.Sprintf("round %d delay %s: %s after B's answer, Directus accepted it: %v", o.round, o.delay, o.after.Round(time.Microsecond), o.accepted))
		}
		t.Logf("measured: %d rounds: A answered B's new token %d times, a newer one %d, the old one %d, 503 %d; B did not rotate %d times; old answers: [%s]",
			rounds, fresh, newer, len(olds), refused, same, strings.Join(detail, "; "))
		if fresh+newer+len(olds) < rounds/2 {
			t.Errorf("only %d of %d rounds measured anything", fresh+newer+len(olds), rounds)
		}
	})
}
