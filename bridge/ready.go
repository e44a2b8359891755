package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// Defaults of Server's readiness fields.
const (
	DefaultDirectusCheckInterval = 5 * time.Second
	DefaultReadyTimeout          = 2 * time.Second
)

var (
	// errCheckTimedOut is a check that did not answer within ReadyTimeout.
	errCheckTimedOut = errors.New("check timed out")
	// errCheckPanicked is a check that panicked (only Server.Ready can).
	errCheckPanicked = errors.New("check panicked")
	// errDiscovery is an issuer whose discovery document could not be read.
	errDiscovery = errors.New("discovery failed")
)

// readiness is what /readyz knows: one probe per check, and which checks
// were failing at the last answer (to log changes, not every probe).
type readiness struct {
	directus probe[error]
	extra    probe[map[string]error]

	mu      sync.Mutex
	issuers map[*issuerKeys]*probe[error]
	failing map[string]bool
}

// ready answers GET /readyz: 200 when every check passes, else 503. The body
// maps each check ("directus", "issuer:<name>" and those of Server.Ready) to
// "ok" or "failing"; a failing one also gets "<check>.reason", a fixed
// phrase that never carries an error's text (which may hold URLs or what an
// upstream answered); the error itself is logged when a check starts or
// stops failing.
//
// Every check runs in the background, one at a time per check, bounded by
// ReadyTimeout, and the answer waits for none longer than that:
//   - directus: Ping, at most once per DirectusCheckInterval;
//   - issuer:<name>: failing until the issuer's keys are loaded; while they
//     are not, each probe asks for them again, within the cooldowns
//     verification keeps (discovery and JWKS, 10s each), so probing cannot
//     hammer an IdP either; once loaded, it costs no request.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	timeout := s.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	every := s.DirectusCheckInterval
	if every <= 0 {
		every = DefaultDirectusCheckInterval
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	now := s.Exchanger.now()
	st := &s.readiness

	var mu sync.Mutex
	checks := map[string]error{}
	report := func(name string, err, failed error) {
		if failed != nil {
			err = failed
		}
		mu.Lock()
		defer mu.Unlock()
		checks[name] = err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		err, failed := st.directus.result(ctx, now, every, timeout, s.Exchanger.directus.Ping)
		report("directus", err, failed)
	})
	for k, p := range st.issuerProbes(s.Exchanger.verifier.all()) {
		wg.Go(func() {
			err, failed := p.result(ctx, now, 0, timeout, func(ctx context.Context) error { return checkIssuer(ctx, k, now) })
			report("issuer:"+k.cfg.Name, err, failed)
		})
	}
	if s.Ready != nil {
		wg.Go(func() {
			m, failed := st.extra.result(ctx, now, 0, timeout, s.Ready)
			if failed != nil {
				report("ready", failed, nil) // their names are unknown
				return
			}
			for name, err := range m {
				report(name, err, nil)
			}
		})
	}
	wg.Wait()

	st.logChanges(ctx, s.log().With("request_id", RequestID(ctx)), checks)
	status, body := http.StatusOK, make(map[string]string, len(checks))
	for name, err := range checks {
		if err == nil {
			body[name] = "ok"
			continue
		}
		status = http.StatusServiceUnavailable
		body[name] = "failing"
		body[name+".reason"] = readyReason(name, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, body)
}

// issuerProbes returns the probe of each issuer in keys, forgetting those of
// issuers that are gone (after a reload).
func (st *readiness) issuerProbes(keys []*issuerKeys) map[*issuerKeys]*probe[error] {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[*issuerKeys]*probe[error], len(keys))
	for _, k := range keys {
		p := st.issuers[k]
		if p == nil {
			p = &probe[error]{}
		}
		out[k] = p
	}
	st.issuers = out
	return out
}

// logChanges logs the checks that started or stopped failing since the
// answer before.
func (st *readiness) logChanges(ctx context.Context, log *slog.Logger, checks map[string]error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failing == nil {
		st.failing = map[string]bool{}
	}
	for name, err := range checks {
		was := st.failing[name]
		switch {
		case err != nil && !was:
			log.WarnContext(ctx, "readiness check failing", "event", "readiness", "check", name,
				"reason", readyReason(name, err), "err", err.Error())
		case err == nil && was:
			log.InfoContext(ctx, "readiness check ok again", "event", "readiness", "check", name)
		}
		st.failing[name] = err != nil
	}
}

// checkIssuer is nil when the issuer's keys are loaded. When they are not,
// it asks for them again (warm: discovery and JWKS each at most once per
// their cooldown, so probing cannot hammer an IdP) and says why they are
// not.
func checkIssuer(ctx context.Context, k *issuerKeys, now time.Time) error {
	if k.status() == nil {
		return nil
	}
	err := k.warm(ctx, now)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	k.mu.Lock()
	discovered := k.set != nil
	k.mu.Unlock()
	if !discovered {
		return fmt.Errorf("%w: %w", errDiscovery, err)
	}
	return err
}

// readyReason is what /readyz says of a failing check: a phrase chosen by
// the kind of err, never its text.
func readyReason(name string, err error) string {
	var api *directus.APIError
	switch {
	case errors.Is(err, errCheckTimedOut), errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, errCheckPanicked):
		return "check panicked"
	case errors.As(err, &api):
		switch {
		case api.Code == directus.CodeUnreachable && strings.Contains(api.Message, context.DeadlineExceeded.Error()):
			return "timed out"
		case api.Code == directus.CodeUnreachable:
			return "unreachable"
		case api.Code == directus.CodeMalformed && api.Status == http.StatusOK:
			return "unexpected answer"
		case api.Status != 0:
			return fmt.Sprintf("answered HTTP %d", api.Status)
		}
		return "unexpected answer"
	case errors.Is(err, errDiscovery):
		return "discovery failed"
	case errors.Is(err, errFetchingKeys):
		return "JWKS fetch failed"
	case errors.Is(err, errKeysUnavailable), strings.HasPrefix(name, "issuer:"):
		return "keys not loaded"
	}
	return "failing, see the logs"
}

// probe runs one check at a time and keeps its last result: callers within
// every of the last run's start get that result, and callers while a run is
// in flight wait for it (singleflight), each at most until its own context
// ends. A run is detached from the caller that started it and bounded by
// its own timeout, so a caller that gives up cancels nobody else's answer.
type probe[T any] struct {
	mu   sync.Mutex
	last *probeRun[T] // the last finished run
	run  *probeRun[T] // the run in flight
}

type probeRun[T any] struct {
	at     time.Time // when it started, on the exchanger's clock
	done   chan struct{}
	val    T
	failed error // errCheckPanicked, or nil
}

// result is the check's value, or errCheckTimedOut when ctx ended first, or
// errCheckPanicked.
func (p *probe[T]) result(ctx context.Context, now time.Time, every, timeout time.Duration, check func(context.Context) T) (T, error) {
	p.mu.Lock()
	if l := p.last; l != nil && every > 0 && !now.Before(l.at) && now.Sub(l.at) < every {
		p.mu.Unlock()
		return l.val, l.failed
	}
	run := p.run
	if run == nil {
		run = &probeRun[T]{at: now, done: make(chan struct{})}
		p.run = run
		go p.do(context.WithoutCancel(ctx), run, timeout, check)
	}
	p.mu.Unlock()
	select {
	case <-run.done:
		return run.val, run.failed
	case <-ctx.Done():
		var zero T
		return zero, errCheckTimedOut
	}
}

func (p *probe[T]) do(ctx context.Context, run *probeRun[T], timeout time.Duration, check func(context.Context) T) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	run.failed = errCheckPanicked
	defer func() {
		_ = recover() // run.failed says so; the process must not die of it
		cancel()
		p.mu.Lock()
		p.last, p.run = run, nil
		p.mu.Unlock()
		close(run.done)
	}()
	run.val = check(ctx)
	run.failed = nil
}
