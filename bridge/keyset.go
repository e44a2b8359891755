package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// keySet is one issuer's JWKS, an oidc.KeySet. Keys are cached; a token whose
// kid is unknown triggers a refresh, but at most one per cooldown, and
// concurrent refreshes are merged into one, so a burst of tokens with made-up
// kids cannot turn into a refresh storm against the IdP. When the JWKS
// endpoint is down, tokens signed with cached keys still verify; unknown
// keys fail closed.
//
// A fetch runs detached from the callers that wait for it, bounded by
// timeout: a caller whose context ends stops waiting (and gets an
// errFetchingKeys) without cancelling the fetch for the others, and a
// hanging JWKS endpoint holds nobody longer than their own deadline.
type keySet struct {
	url      string
	client   *http.Client
	now      func() time.Time
	cooldown time.Duration
	timeout  time.Duration // of one fetch (default defaultIdPTimeout)
	fetches  atomic.Int64
	observe  func(ok bool) // called after every fetch, when set

	mu       sync.RWMutex
	keys     []jose.JSONWebKey
	fetched  time.Time // last fetch attempt, successful or not
	lastErr  error     // of the last fetch, nil when it succeeded
	inflight *flight   // the fetch in flight, nil if none
}

// flight is a request to an IdP that callers share: done is closed once
// err is set.
type flight struct {
	done chan struct{}
	err  error
}

// wait returns the flight's error, or ctx's when ctx ends first.
func (f *flight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keySetCooldown is the least time between two JWKS fetches.
const keySetCooldown = 10 * time.Second

// defaultIdPTimeout bounds one request to an IdP (discovery, JWKS) when
// the issuer's timeout is not set.
const defaultIdPTimeout = 10 * time.Second

// maxJWKSBytes bounds a JWKS document (and a discovery document).
const maxJWKSBytes = 1 << 20

var (
	errFetchingKeys = errors.New("fetching keys")
	// errKeySetCooldown: the key to a token is unknown, and the key set was
	// fetched less than the cooldown ago.
	errKeySetCooldown = errors.New("unknown key and the key set was refreshed less than the cooldown ago")
)

// asymmetric lists the algorithms a JWKS key may verify; HMAC and none are
// never accepted (the issuer's own allow-list is checked before this).
var asymmetric = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// VerifySignature implements oidc.KeySet, with every asymmetric algorithm
// allowed.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	return k.verify(ctx, raw, asymmetric)
}

// verify checks the compact JWS raw with the issuer's keys and returns its
// payload. algs is the allow-list go-jose enforces; algorithms outside
// asymmetric never are allowed.
func (k *keySet) verify(ctx context.Context, raw string, algs []jose.SignatureAlgorithm) ([]byte, error) {
	algs = slices.DeleteFunc(slices.Clone(algs), func(a jose.SignatureAlgorithm) bool { return !slices.Contains(asymmetric, a) })
	if len(algs) == 0 {
		return nil, errors.New("no asymmetric algorithm allowed")
	}
	jws, err := jose.ParseSignedCompact(stripSpace(raw), algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jws: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.RLock()
	keys, seen := k.keys, k.fetched
	k.mu.RUnlock()
	if payload, found, err := verifyWith(jws, keys, kid); found {
		return payload, err
	}
	if err := k.refresh(ctx, seen); err != nil {
		return nil, err
	}
	k.mu.RLock()
	keys = k.keys
	k.mu.RUnlock()
	if payload, found, err := verifyWith(jws, keys, kid); found {
		return payload, err
	}
	return nil, errors.New("no key for the token's kid")
}

// stripSpace removes white space from a compact JWS, as go-jose's
// deprecated ParseSigned did, so that tokens verify as they did: by the
// time a token gets here, the bridge's own decoding of its header and
// payload has refused white space in them (but CR and LF, which base64
// decoding skips), so it can only change the signature segment, not what
// was signed. A token of base64url and dots is returned as it is.
func stripSpace(raw string) string {
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= utf8.RuneSelf {
			return strings.Map(func(r rune) rune {
				if unicode.IsSpace(r) {
					return -1
				}
				return r
			}, raw)
		}
	}
	return raw
}

// verifyWith tries the keys matching kid (all keys when the token has none).
// found is false when no key matched the kid.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) (payload []byte, found bool, err error) {
	err = errors.New("signature does not verify")
	alg := jws.Signatures[0].Header.Algorithm
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		found = true
		// A key is used with exactly one algorithm (RFC 8725 §3.1): the
		// one its JWK names, when it names one.
		if keys[i].Algorithm != "" && keys[i].Algorithm != alg {
			continue
		}
		if p, verr := jws.Verify(&keys[i]); verr == nil {
			return p, true, nil
		}
	}
	return nil, found, err
}

// refresh fetches the JWKS unless a fetch finished after seen (its result
// is returned), or the last attempt is more recent than the cooldown (its
// error, when it failed, else errKeySetCooldown). A fetch in flight is
// joined rather than repeated. The wait ends with ctx; the fetch does not.
func (k *keySet) refresh(ctx context.Context, seen time.Time) error {
	k.mu.Lock()
	if k.fetched.After(seen) {
		err := k.lastErr
		k.mu.Unlock()
		return err // refreshed since the caller looked: use that
	}
	f := k.inflight
	if f == nil {
		now := k.now()
		if since := now.Sub(k.fetched); !k.fetched.IsZero() && since >= 0 && since < k.cooldown {
			err := k.lastErr // the IdP is failing: the key may be new
			k.mu.Unlock()
			if err == nil {
				err = errKeySetCooldown
			}
			return err
		}
		f = &flight{done: make(chan struct{})}
		k.inflight = f
		go k.run(context.WithoutCancel(ctx), f, now)
	}
	k.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		if errors.Is(err, errFetchingKeys) {
			return err
		}
		return fmt.Errorf("%w: %w", errFetchingKeys, err)
	}
	return nil
}

// run is one fetch, started at now, for the callers waiting on f.
func (k *keySet) run(ctx context.Context, f *flight, now time.Time) {
	keys, err := k.fetch(ctx)
	k.fetches.Add(1)
	if k.observe != nil {
		k.observe(err == nil)
	}
	k.mu.Lock()
	k.fetched, k.inflight = now, nil
	if err != nil {
		k.lastErr = fmt.Errorf("%w: %v", errFetchingKeys, err)
	} else {
		k.keys, k.lastErr = keys, nil
	}
	f.err = k.lastErr
	k.mu.Unlock()
	close(f.done)
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	timeout := k.timeout
	if timeout <= 0 {
		timeout = defaultIdPTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS answered %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("JWKS is not a key set: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, key := range set.Keys {
		if key.IsPublic() && (key.Use == "" || key.Use == "sig") {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

// loaded reports whether the key set holds keys.
func (k *keySet) loaded() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.keys) > 0
}

// errNoUsableKeys is a JWKS that answered without a public signing key.
var errNoUsableKeys = errors.New("the JWKS holds no public signing key")

// status is nil when the key set holds keys, else why it does not.
func (k *keySet) status() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	switch {
	case len(k.keys) > 0:
		return nil
	case k.lastErr != nil:
		return k.lastErr
	case k.fetched.IsZero():
		return fmt.Errorf("%w: not fetched yet", errKeysUnavailable)
	}
	return fmt.Errorf("%w: %w", errKeysUnavailable, errNoUsableKeys)
}

// lastFetch is when the last fetch started (zero before the first).
func (k *keySet) lastFetch() time.Time {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.fetched
}
