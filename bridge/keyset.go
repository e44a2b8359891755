package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keySet is one issuer's JWKS, an oidc.KeySet. Keys are cached; a token whose
// kid is unknown triggers a refresh, but at most one per cooldown, and
// concurrent refreshes are merged into one, so a burst of tokens with made-up
// kids cannot turn into a refresh storm against the IdP. When the JWKS
// endpoint is down, tokens signed with cached keys still verify; unknown
// keys fail closed.
type keySet struct {
	url      string
	client   *http.Client
	now      func() time.Time
	cooldown time.Duration
	fetches  atomic.Int64
	observe  func(ok bool) // called after every fetch, when set

	fetchMu sync.Mutex // one fetch at a time
	mu      sync.RWMutex
	keys    []jose.JSONWebKey
	fetched time.Time // last fetch attempt, successful or not
}

// keySetCooldown is the least time between two JWKS fetches.
const keySetCooldown = 10 * time.Second

// maxJWKSBytes bounds a JWKS document.
const maxJWKSBytes = 1 << 20

var errFetchingKeys = errors.New("fetching keys")

// asymmetric lists the algorithms a JWKS key may verify; HMAC and none are
// never accepted (the issuer's own allow-list is checked before this).
var asymmetric = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, asymmetric)
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

// refresh fetches the JWKS unless another caller did so after seen, or the
// last attempt is more recent than the cooldown.
func (k *keySet) refresh(ctx context.Context, seen time.Time) error {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	k.mu.RLock()
	last := k.fetched
	k.mu.RUnlock()
	if last.After(seen) {
		return nil // refreshed while we waited: use that
	}
	now := k.now()
	if !last.IsZero() && now.Sub(last) < k.cooldown {
		return errors.New("unknown key and the key set was refreshed less than the cooldown ago")
	}
	keys, err := k.fetch(ctx)
	k.fetches.Add(1)
	if k.observe != nil {
		k.observe(err == nil)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fetched = now
	if err != nil {
		return fmt.Errorf("%w: %v", errFetchingKeys, err)
	}
	k.keys = keys
	return nil
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
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
