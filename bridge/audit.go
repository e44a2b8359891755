package bridge

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// What a reused exchange costs in the log.
//
// Every exchange that changes something (a token issued, rotated, or a
// grant updated) and every refusal or failure is logged at once, one line
// each, with its request id. A reuse changes nothing: Directus is not asked,
// the state is not written, the caller gets the token it was already given.
// Logging each one as its own line made the log the largest cost of the
// returning client (about 490 bytes a line, 108 MB for 220,000 exchanges;
// formatting and writing it took 14% of the bridge's CPU under load), and
// it buried the lines that matter.
//
// So reuses are summarised instead, per Directus user and token: one
// "exchanges reused" line (event reuse_summary) says which issuer, client,
// user, grant and token (by fingerprint) it was, how many times the token
// was handed out again, the first and last time, and from which addresses
// and with which subject tokens (by fingerprint; the first few distinct
// ones, and whether there were more). A summary is written
//
//   - at the latest ReuseSummaryInterval after its first reuse (all
//     summaries open at that time are written together),
//   - before the line of an exchange of the same user that issued, rotated
//     or updated its token, so that a token's reuses are logged before what
//     replaced it,
//   - when the token of a user changes between two reuses,
//   - when more than ReuseSummaryClients users have one open (all are
//     written: memory stays bounded whatever the number of clients),
//   - and at shutdown (Server.Close, which Handler also registers with the
//     http.Server that serves it, see there), after which reuses are logged
//     one line each.
//
// What is given up: the request id of an individual reuse is not logged
// (the caller still gets it in X-Request-Id; the summary's client, token
// fingerprint and time span place it), a reuse is logged up to one interval
// late, and a crash (not a graceful shutdown) loses the summaries still
// open, at most one interval of reuses. Reuses are still counted at once in
// directus_bridge_exchanges_total{outcome="reused"}. With debug logging on,
// each reuse is also logged at debug level as before. No summary holds a
// secret: tokens are compared in memory and logged only by fingerprint.

// Defaults of the reuse summary.
const (
	DefaultReuseSummaryInterval = time.Minute
	DefaultReuseSummaryClients  = 10000
)

// maxListed bounds the distinct remote addresses and subject token
// fingerprints one summary lists.
const maxListed = 4

// reuseLog holds the open summaries: reused exchanges not logged yet.
type reuseLog struct {
	log   *slog.Logger
	every time.Duration
	max   int

	mu     sync.Mutex
	open   map[string]*reuseEntry // by Directus user id
	timer  *time.Timer            // pending while open is not empty
	closed bool                   // after close: reuses are logged one by one

	closing sync.Mutex // held while close writes: a second close waits for the first
}

// reuseEntry is one open summary: the reuses of one token of one user.
type reuseEntry struct {
	issuer, client, userID string
	role, rule             string
	policies, scopes       []string
	token                  string // compared, never logged
	expiry                 time.Time
	first, last            time.Time
	count                  int
	remotes                bounded
	subjects               bounded // subject token fingerprints
}

// bounded is a short list of distinct strings and whether more were seen.
type bounded struct {
	list []string
	more bool
}

func (b *bounded) add(s string) {
	for _, x := range b.list {
		if x == s {
			return
		}
	}
	if len(b.list) < maxListed {
		b.list = append(b.list, s)
		return
	}
	b.more = true
}

func newReuseLog(log *slog.Logger, every time.Duration, max int) *reuseLog {
	if every <= 0 {
		every = DefaultReuseSummaryInterval
	}
	if max <= 0 {
		max = DefaultReuseSummaryClients
	}
	return &reuseLog{log: log, every: every, max: max, open: map[string]*reuseEntry{}}
}

// add counts one reused exchange of res, answered at now to remote. It
// reports counted false when the reuse must be logged on its own line
// (after close), and opened when it opened a summary.
func (l *reuseLog) add(res *Result, remote string, now time.Time) (counted, opened bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false, false
	}
	var flush []*reuseEntry
	var why string
	e := l.open[res.UserID]
	if e != nil && e.token != res.Token {
		flush, why = []*reuseEntry{e}, "token_changed"
		e = nil
	}
	if e == nil {
		if len(l.open) >= l.max {
			flush, why = l.takeAll(flush), "full"
		}
		e = &reuseEntry{issuer: res.Issuer, client: res.Client, userID: res.UserID, token: res.Token, first: now}
		opened = true
		l.open[res.UserID] = e
		if l.timer == nil {
			l.timer = time.AfterFunc(l.every, l.tick)
		}
	}
	// The grant of the last reuse: a change of grant is an update, which
	// is logged on its own line and closes the summary first.
	e.role, e.rule, e.policies, e.scopes, e.expiry = res.Role, res.Rule, res.Policies, res.Scopes, res.Expiry
	e.count++
	if now.After(e.last) {
		e.last = now
	}
	e.remotes.add(remote)
	e.subjects.add(res.SubjectFP)
	l.mu.Unlock()
	l.write(flush, why)
	return true, opened
}

// takeAll empties open into flush (l.mu held).
func (l *reuseLog) takeAll(flush []*reuseEntry) []*reuseEntry {
	for id, e := range l.open {
		flush = append(flush, e)
		delete(l.open, id)
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	return flush
}

// tick writes every open summary (the interval is over).
func (l *reuseLog) tick() {
	l.mu.Lock()
	flush := l.takeAll(nil)
	l.mu.Unlock()
	l.write(flush, "interval")
}

// before writes the open summary of userID, if any, ahead of another line
// about that user.
func (l *reuseLog) before(userID string) {
	if userID == "" {
		return
	}
	l.mu.Lock()
	e := l.open[userID]
	if e != nil {
		delete(l.open, userID)
	}
	l.mu.Unlock()
	if e != nil {
		l.write([]*reuseEntry{e}, "superseded")
	}
}

// close writes every open summary; later reuses are logged one by one. It
// returns when the summaries are written, also when another close is
// writing them.
func (l *reuseLog) close() {
	l.closing.Lock()
	defer l.closing.Unlock()
	l.mu.Lock()
	l.closed = true
	flush := l.takeAll(nil)
	l.mu.Unlock()
	l.write(flush, "shutdown")
}

func (l *reuseLog) write(es []*reuseEntry, why string) {
	for _, e := range es {
		attrs := []slog.Attr{
			slog.String("event", "reuse_summary"), slog.String("outcome", string(Reused)),
			slog.String("issuer", e.issuer), slog.String("client", e.client), slog.String("user_id", e.userID),
			slog.String("role", e.role), slog.Any("policies", e.policies), slog.String("rule", e.rule),
			slog.String("scopes", strings.Join(e.scopes, " ")), slog.String("token_fp", Fingerprint(e.token)),
			slog.String("expires_at", e.expiry.UTC().Format(time.RFC3339)),
			slog.Int("reuses", e.count), slog.Time("first", e.first.UTC()), slog.Time("last", e.last.UTC()),
			slog.Any("remotes", e.remotes.list), slog.Any("subject_fps", e.subjects.list), slog.String("flush", why),
		}
		if e.remotes.more {
			attrs = append(attrs, slog.Bool("more_remotes", true))
		}
		if e.subjects.more {
			attrs = append(attrs, slog.Bool("more_subject_fps", true))
		}
		l.log.LogAttrs(context.Background(), slog.LevelInfo, "exchanges reused", attrs...)
	}
}
