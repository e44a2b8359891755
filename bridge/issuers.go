package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// verifier checks subject tokens against the trusted issuers. The set of
// issuers is replaced whole at run time (setIssuers, on a reload); a
// verification reads it once, so it sees one set from start to end.
type verifier struct {
	now     func() time.Time
	observe func(issuer string, ok bool) // JWKS fetch outcomes, for metrics; may be nil
	cache   *verifiedCache

	mu      sync.Mutex // one setIssuers at a time
	issuers atomic.Pointer[issuerSet]
}

// issuerSet is the trusted issuers at one time. It is never modified once
// published.
type issuerSet struct {
	byIss  map[string]*issuerKeys
	byName []*issuerKeys // sorted by name
}

// trusts reports whether cfg is the configuration in force of its issuer:
// an identity verified under an issuer since removed or changed is not.
func (s *issuerSet) trusts(cfg *IssuerConfig) bool {
	k := s.byIss[cfg.Issuer]
	return k != nil && k.cfg == cfg
}

// issuerKeys is one trusted issuer: its configuration, which never changes
// (a reload that changes it makes a new issuerKeys), and its key set, found
// by discovery on first use unless jwks_url names it.
//
// Discovery runs detached from the callers that wait for it, bounded by the
// issuer's timeout; a caller stops waiting when its own context ends, and
// no lock is held while a request is out, so a hanging IdP holds up no
// caller longer than its deadline and no other issuer at all. After a
// failure, discovery is tried again at most once per discoveryCooldown.
type issuerKeys struct {
	cfg     *IssuerConfig
	client  *http.Client // to the IdP: discovery and JWKS, with the issuer's timeout
	now     func() time.Time
	observe func(ok bool)

	mu        sync.Mutex // guards what follows; never held during a request
	set       *keySet    // nil until discovery found the JWKS
	lastTry   time.Time  // when the last discovery started
	lastErr   error      // of the last discovery
	discovery *flight    // the discovery in flight, nil if none
}

// discoveryCooldown is the least time between two discoveries of an issuer.
const discoveryCooldown = 10 * time.Second

// errKeysUnavailable marks a token that could not be checked because the
// issuer's keys could not be had: the caller gets 503.
var errKeysUnavailable = errors.New("issuer keys unavailable")

// newVerifier trusts issuers (their defaults are applied here). observe, when
// set, is told the outcome of every JWKS fetch, by issuer name.
func newVerifier(issuers []IssuerConfig, now func() time.Time, cacheSize int, observe func(issuer string, ok bool)) *verifier {
	v := &verifier{now: now, observe: observe, cache: newVerifiedCache(cacheSize)}
	v.issuers.Store(&issuerSet{byIss: map[string]*issuerKeys{}})
	v.setIssuers(issuers)
	return v
}

// all returns the trusted issuers, sorted by name: a snapshot, which a
// later setIssuers does not change.
func (v *verifier) all() []*issuerKeys { return slices.Clone(v.issuers.Load().byName) }

// setIssuers replaces the trusted issuers by cfgs (defaults applied here;
// they are expected to be valid, see ValidateIssuers) and returns the names
// of the issuers added, removed and changed, each sorted. It takes effect
// for every verification that starts after it returns:
//   - a removed issuer is distrusted, and no verification of it is served
//     from the cache any more;
//   - a changed issuer is checked with its new configuration, and cached
//     verifications made under the old one are dropped; it keeps its keys
//     when issuer, jwks_url and timeout are unchanged;
//   - an unchanged issuer keeps its keys and its cached verifications.
//
// Verifications in flight finish with the set they started with.
func (v *verifier) setIssuers(cfgs []IssuerConfig) (added, removed, changed []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.issuers.Load()
	prev := make(map[string]*issuerKeys, len(old.byName))
	for _, k := range old.byName {
		prev[k.cfg.Name] = k
	}
	next := &issuerSet{byIss: make(map[string]*issuerKeys, len(cfgs))}
	for _, c := range cfgs {
		cfg := c.clone()
		cfg.setDefaults()
		k, was := prev[cfg.Name], prev[cfg.Name] != nil
		switch {
		case !was:
			added = append(added, cfg.Name)
			k = v.newIssuerKeys(cfg)
		case !reflect.DeepEqual(k.cfg, cfg):
			changed = append(changed, cfg.Name)
			k = v.newIssuerKeys(cfg).adopt(k)
		}
		delete(prev, cfg.Name)
		next.byIss[cfg.Issuer] = k
		next.byName = append(next.byName, k)
	}
	for name := range prev {
		removed = append(removed, name)
	}
	slices.SortFunc(next.byName, func(a, b *issuerKeys) int { return strings.Compare(a.cfg.Name, b.cfg.Name) })
	v.issuers.Store(next)
	if len(removed)+len(changed) > 0 {
		// Verify checks every hit against the set in force (trusts), so a
		// verification that was in flight across the swap cannot bring a
		// stale identity back; clearing frees the memory.
		v.cache.clear()
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

// warm discovers every issuer and loads its keys, all at once, so that one
// hanging IdP delays none of the others; it returns when each has
// succeeded or failed (each bounded by its issuer's timeout) or ctx ends.
// Failures are returned joined; they are retried later.
func (v *verifier) warm(ctx context.Context) error {
	keys := v.all()
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() {
			if err := k.warm(ctx, v.now()); err != nil {
				errs[i] = fmt.Errorf("issuer %s: %w", k.cfg.Name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (v *verifier) newIssuerKeys(cfg *IssuerConfig) *issuerKeys {
	k := &issuerKeys{cfg: cfg, now: v.now, client: &http.Client{Timeout: cfg.Timeout.D(), Transport: limitBody{http.DefaultTransport}}}
	if v.observe != nil {
		name := cfg.Name
		k.observe = func(ok bool) { v.observe(name, ok) }
	}
	if cfg.JWKSURL != "" {
		k.set = k.newKeySet(cfg.JWKSURL)
	}
	return k
}

// adopt takes over the keys old has loaded when k reads them from the same
// place, so that a reload that changes only checks costs no fetch.
func (k *issuerKeys) adopt(old *issuerKeys) *issuerKeys {
	if old.cfg.Issuer != k.cfg.Issuer || old.cfg.JWKSURL != k.cfg.JWKSURL || old.cfg.Timeout != k.cfg.Timeout {
		return k
	}
	old.mu.Lock()
	defer old.mu.Unlock()
	if old.set != nil {
		k.set, k.client = old.set, old.client
	}
	return k
}

func (k *issuerKeys) newKeySet(url string) *keySet {
	return &keySet{url: url, client: k.client, now: k.now, cooldown: keySetCooldown,
		timeout: k.cfg.Timeout.D(), observe: k.observe}
}

// keys returns the issuer's key set, discovering its JWKS URL on first use
// and at most once per discoveryCooldown after a failure. A discovery in
// flight is joined, not repeated; the wait ends with ctx, the discovery
// does not.
func (k *issuerKeys) keys(ctx context.Context, now time.Time) (*keySet, error) {
	k.mu.Lock()
	if set := k.set; set != nil {
		k.mu.Unlock()
		return set, nil
	}
	f := k.discovery
	if f == nil {
		if since := now.Sub(k.lastTry); !k.lastTry.IsZero() && since >= 0 && since < discoveryCooldown {
			err := k.lastErr
			k.mu.Unlock()
			return nil, err
		}
		k.lastTry = now
		f = &flight{done: make(chan struct{})}
		k.discovery = f
		go k.discover(context.WithoutCancel(ctx), f)
	}
	k.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("discovery for %s: %w", k.cfg.Name, ctx.Err())
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.set, nil
}

// discover reads the issuer's discovery document for the callers waiting
// on f, within the issuer's timeout.
func (k *issuerKeys) discover(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout.D())
	defer cancel()
	url, err := k.jwksURI(ctx)
	k.mu.Lock()
	k.discovery, k.lastErr = nil, nil
	if err != nil {
		k.lastErr = fmt.Errorf("discovery for %s: %w", k.cfg.Name, err)
	} else {
		k.set = k.newKeySet(url)
	}
	f.err = k.lastErr
	k.mu.Unlock()
	close(f.done)
}

func (k *issuerKeys) jwksURI(ctx context.Context) (string, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, k.client), k.cfg.Issuer)
	if err != nil {
		return "", err
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return "", errors.New("no jwks_uri")
	}
	return meta.JWKSURI, nil
}

// warm discovers the issuer and loads its keys unless they are loaded,
// within the cooldowns of both, so that the first exchange does not pay
// for it; it returns status.
func (k *issuerKeys) warm(ctx context.Context, now time.Time) error {
	set, err := k.keys(ctx, now)
	if err != nil {
		return err
	}
	if set.loaded() {
		return nil
	}
	if err := set.refresh(ctx, set.lastFetch()); err != nil && !errors.Is(err, errKeySetCooldown) {
		return err
	}
	return k.status()
}

// status is nil when the issuer's keys are loaded (a JWKS fetch succeeded
// with at least one usable key; a later failed fetch keeps them), else
// why they are not: the last discovery's or JWKS fetch's error, or that
// none was tried yet. It makes no request; warm does.
func (k *issuerKeys) status() error {
	k.mu.Lock()
	set, lastErr, inflight := k.set, k.lastErr, k.discovery != nil
	k.mu.Unlock()
	switch {
	case set != nil:
		return set.status()
	case lastErr != nil:
		return lastErr
	case inflight:
		return fmt.Errorf("%w: discovery for %s in progress", errKeysUnavailable, k.cfg.Name)
	}
	return fmt.Errorf("%w: %s not discovered yet", errKeysUnavailable, k.cfg.Name)
}

// ready reports whether the issuer's keys are loaded.
func (k *issuerKeys) ready() bool { return k.status() == nil }

// limitBody bounds what an IdP's answer can make the bridge read
// (go-oidc reads a discovery document whole).
type limitBody struct{ http.RoundTripper }

func (t limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.Body = limitedReadCloser{io.LimitReader(resp.Body, maxJWKSBytes), resp.Body}
	}
	return resp, err
}

type limitedReadCloser struct {
	io.Reader
	io.Closer
}

// clone copies c deeply enough that the caller's later changes to its
// slices and maps do not reach the verifier.
func (c IssuerConfig) clone() *IssuerConfig {
	c.Audiences = slices.Clone(c.Audiences)
	c.Algorithms = slices.Clone(c.Algorithms)
	c.ScopeClaims = slices.Clone(c.ScopeClaims)
	c.RequiredClaims = maps.Clone(c.RequiredClaims)
	return &c
}
