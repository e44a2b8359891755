package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// fakeExchanger stands for bridge.Server: subjects starting "idp-" with
// three dot-separated parts are trusted; each is swapped for its current
// token, or refused with its error.
type fakeExchanger struct {
	mu     sync.Mutex
	tokens map[string]string
	errs   map[string]*bridge.Error
	swaps  []string // subjects swapped, in order
	// onSwap, when set, runs after each swap (under no lock).
	onSwap func(subject string, n int)
}

func newFakeExchanger() *fakeExchanger {
	return &fakeExchanger{tokens: map[string]string{}, errs: map[string]*bridge.Error{}}
}

func (f *fakeExchanger) Trusts(raw string) bool {
	return strings.HasPrefix(raw, "idp-") && strings.Count(raw, ".") == 2
}

func (f *fakeExchanger) Swap(ctx context.Context, r *http.Request, subject string) (*bridge.Result, *bridge.Error) {
	f.mu.Lock()
	f.swaps = append(f.swaps, subject)
	n := len(f.swaps)
	e, tok := f.errs[subject], f.tokens[subject]
	if e == nil && tok == "" {
		tok = "dbr_" + strings.ReplaceAll(subject, ".", "_")
		f.tokens[subject] = tok
	}
	hook := f.onSwap
	f.mu.Unlock()
	if hook != nil {
		defer hook(subject, n)
	}
	if e != nil {
		return nil, e
	}
	if bridge.RequestID(ctx) == "" {
		panic("swap without a request id")
	}
	return &bridge.Result{Token: tok, Outcome: bridge.Reused}, nil
}

func (f *fakeExchanger) set(subject, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[subject] = token
}

func (f *fakeExchanger) refuse(subject string, e *bridge.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[subject] = e
}

func (f *fakeExchanger) swapped() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.swaps...)
}
