package bridge

// Benchmarks of the hot paths: subject token verification, the
// exchange end to end over HTTP against the in-memory fake Directus, scope
// normalisation and the state store. The load benchmark against a real
// Directus is cmd/bridge-bench; these measure the bridge's own cost.
//
//	go test -run '^$' -bench . -benchmem ./bridge

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
	"github.com/directus-bridge/directus-bridge/mapping"
)

const benchAudience = "https://bridge.bench/api"

// benchAlgs are the algorithms of the three issuer kinds the bridge meets:
// Auth0 (RS256), SuperTokens (ES256) and EdDSA.
var benchAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// benchIssuer is an OIDC issuer for benchmarks: discovery, a JWKS with one
// key generated per benchmark, and a signer. (testIssuer needs a *testing.T.)
type benchIssuer struct {
	url    string
	jwks   string
	alg    jose.SignatureAlgorithm
	signer jose.Signer
}

func newBenchIssuer(tb testing.TB, alg jose.SignatureAlgorithm) *benchIssuer {
	tb.Helper()
	key := generateKey(tb, alg)
	kid := "bench-" + string(alg)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	bi := &benchIssuer{url: srv.URL + "/iss", jwks: srv.URL + "/iss/jwks", alg: alg}
	mux.HandleFunc("/iss/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": bi.url, "jwks_uri": bi.jwks})
	})
	mux.HandleFunc("/iss/jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: key.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"},
		}})
	})
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	var err error
	bi.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return bi
}

// config is the issuer's configuration: RS256 has the hook's user ids, the
// others issuer-scoped ones (at most one issuer may use hook ids).
func (bi *benchIssuer) config() IssuerConfig {
	c := IssuerConfig{
		Name: "bench-" + strings.ToLower(string(bi.alg)), Issuer: bi.url, Audiences: []string{benchAudience},
		Algorithms: []string{string(bi.alg)}, RequiredClaims: map[string]any{"gty": "client-credentials"},
	}
	if bi.alg != jose.RS256 {
		c.UserIDs = UserIDsIssuer
	}
	return c
}

// token signs an Auth0-shaped client-credentials token for client, valid
// for two hours.
func (bi *benchIssuer) token(tb testing.TB, client, scope string) string {
	tb.Helper()
	now := time.Now()
	payload, err := json.Marshal(map[string]any{
		"iss": bi.url, "sub": client, "azp": client, "aud": benchAudience, "iat": now.Unix(),
		"exp": now.Add(2 * time.Hour).Unix(), "scope": scope, "gty": "client-credentials",
		"jti": fmt.Sprintf("%x", now.UnixNano()),
	})
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := bi.signer.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// benchBridge is an Exchanger on the fake Directus behind its HTTP handler.
type benchBridge struct {
	ex      *Exchanger
	fake    *directustest.Server
	srv     *httptest.Server
	client  *http.Client
	issuers map[jose.SignatureAlgorithm]*benchIssuer
}

func newBenchBridge(b *testing.B, mutate func(*Options)) *benchBridge {
	b.Helper()
	ctx := b.Context()
	bb := &benchBridge{issuers: map[jose.SignatureAlgorithm]*benchIssuer{}}
	bb.fake = directustest.NewServer(b, directustest.Options{})
	admin, err := directus.New(bb.fake.URL, bb.fake.AdminToken, directus.Options{Retries: -1})
	if err != nil {
		b.Fatal(err)
	}
	pol, err := admin.CreatePolicy(ctx, directus.Policy{Name: "read"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateRole(ctx, directus.Role{Name: "Reader", Policies: []string{pol.ID}}); err != nil {
		b.Fatal(err)
	}
	store := NewMemoryStore()
	o := Options{
		Tokens:   TokenConfig{TTL: Duration(15 * time.Minute)},
		Directus: admin,
		Store:    store,
		// Production logs every exchange at info level as JSON and keeps
		// metrics: pay for both. The rate limits are on but out of reach.
		Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Metrics: NewMetrics(prometheus.NewRegistry(), store, time.Now),
		Limits:  LimitsConfig{PerIP: RateLimit{Rate: 1e9, Burst: 1e9}, PerClient: RateLimit{Rate: 1e9, Burst: 1e9}},
	}
	for _, alg := range benchAlgs {
		bi := newBenchIssuer(b, alg)
		bb.issuers[alg] = bi
		o.Issuers = append(o.Issuers, bi.config())
	}
	if mutate != nil {
		mutate(&o)
	}
	bb.ex, err = NewExchanger(o)
	if err != nil {
		b.Fatal(err)
	}
	m, _, err := LoadMapper(ctx, admin, mapping.Rules{{Name: "readers", AnyScopes: []string{"items:read"}, Role: "Reader"}})
	if err != nil {
		b.Fatal(err)
	}
	bb.ex.SetMapper(m)
	bb.srv = httptest.NewServer((&Server{Exchanger: bb.ex, Logger: o.Logger}).Handler())
	b.Cleanup(bb.srv.Close)
	bb.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(bb.client.CloseIdleConnections)
	return bb
}

// exchange posts one token-exchange request and fails the benchmark unless
// it succeeds.
func (bb *benchBridge) exchange(b *testing.B, body string) {
	resp, err := bb.client.Post(bb.srv.URL+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("exchange: status %d", resp.StatusCode)
	}
}

func benchForm(subject string) string {
	return url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {TokenTypeAccessToken},
	}.Encode()
}

// reportDirectus reports the fake's requests per iteration.
func reportDirectus(b *testing.B, fake *directustest.Server, before int) {
	b.ReportMetric(float64(fake.Requests()-before)/float64(b.N), "directus-req/op")
}

// BenchmarkVerify measures subject token verification per algorithm, with
// the verified-token cache off (every call checks the signature) and on (the
// same token again: a SHA-256 and a map lookup), next to a bare go-oidc
// Verify of the same token, which is what the bridge adds its checks to.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			for _, c := range []struct {
				name string
				size int
			}{{"cache=off", -1}, {"cache=on", 0}} {
				b.Run(c.name, func(b *testing.B) {
					bb := newBenchBridge(b, func(o *Options) { o.VerifiedCacheSize = c.size })
					v := bb.ex.verifier
					raw := bb.issuers[alg].token(b, "svc-verify@clients", "items:read items:write")
					ctx := context.Background()
					if _, err := v.Verify(ctx, raw); err != nil { // discovery and JWKS
						b.Fatal(err)
					}
					b.ReportAllocs()
					for b.Loop() {
						if _, err := v.Verify(ctx, raw); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
			b.Run("go-oidc-bare", func(b *testing.B) {
				bi := newBenchIssuer(b, alg)
				raw := bi.token(b, "svc-verify@clients", "items:read items:write")
				ov := oidc.NewVerifier(bi.url, oidc.NewRemoteKeySet(b.Context(), bi.jwks),
					&oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{string(alg)}})
				ctx := context.Background()
				if _, err := ov.Verify(ctx, raw); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := ov.Verify(ctx, raw); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkExchangeHTTP measures POST /oauth/token end to end (HTTP client,
// server, verification, mapping, state, the fake Directus) one request at a
// time. directus-req/op counts the requests that reached the fake.
func BenchmarkExchangeHTTP(b *testing.B) {
	// returning: a client with a live token presents the same subject token
	// again; the target is no Directus request.
	for _, c := range []struct {
		name string
		size int
	}{{"returning/cache=on", 0}, {"returning/cache=off", -1}} {
		b.Run(c.name, func(b *testing.B) {
			bb := newBenchBridge(b, func(o *Options) { o.VerifiedCacheSize = c.size })
			body := benchForm(bb.issuers[jose.RS256].token(b, "svc-returning@clients", "items:read"))
			bb.exchange(b, body) // creates the user and its token
			before := bb.fake.Requests()
			b.ReportAllocs()
			for b.Loop() {
				bb.exchange(b, body)
			}
			reportDirectus(b, bb.fake, before)
		})
	}

	// cold: a new client every iteration (user created in the fake). Tokens
	// are signed ahead in chunks with the timer stopped.
	b.Run("cold", func(b *testing.B) {
		bb := newBenchBridge(b, nil)
		bi := bb.issuers[jose.RS256]
		var pool []string
		n := 0
		before := bb.fake.Requests()
		b.ReportAllocs()
		for b.Loop() {
			if len(pool) == 0 {
				b.StopTimer()
				for range 128 {
					n++
					pool = append(pool, benchForm(bi.token(b, fmt.Sprintf("svc-cold-%d@clients", n), "items:read")))
				}
				b.StartTimer()
			}
			bb.exchange(b, pool[0])
			pool = pool[1:]
		}
		reportDirectus(b, bb.fake, before)
	})

	// rotating: every exchange replaces the client's token (TTL 1h with
	// rotate_before just under it; the subject token lives 2h).
	b.Run("rotating", func(b *testing.B) {
		bb := newBenchBridge(b, func(o *Options) {
			o.Tokens = TokenConfig{TTL: Duration(time.Hour), RotateBefore: Duration(time.Hour - time.Nanosecond)}
		})
		body := benchForm(bb.issuers[jose.RS256].token(b, "svc-rotating@clients", "items:read"))
		bb.exchange(b, body)
		before := bb.fake.Requests()
		b.ReportAllocs()
		for b.Loop() {
			bb.exchange(b, body)
		}
		reportDirectus(b, bb.fake, before)
	})
}

// BenchmarkExchangeHTTPParallel is the returning client under concurrency
// (GOMAXPROCS goroutines, one client each): what the locks cost.
func BenchmarkExchangeHTTPParallel(b *testing.B) {
	bb := newBenchBridge(b, nil)
	bi := bb.issuers[jose.RS256]
	var bodies []string
	for i := range runtime.GOMAXPROCS(0) * 4 {
		body := benchForm(bi.token(b, fmt.Sprintf("svc-par-%d@clients", i), "items:read"))
		bb.exchange(b, body)
		bodies = append(bodies, body)
	}
	before := bb.fake.Requests()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		body := bodies[int(next.Add(1)-1)%len(bodies)]
		for pb.Next() {
			bb.exchange(b, body)
		}
	})
	reportDirectus(b, bb.fake, before)
}

// BenchmarkExchangeInProcess is Exchanger.Exchange for a returning client
// without HTTP: verification (cached or not), mapping, state.
func BenchmarkExchangeInProcess(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
	}{{"returning/cache=on", 0}, {"returning/cache=off", -1}} {
		b.Run(c.name, func(b *testing.B) {
			bb := newBenchBridge(b, func(o *Options) { o.VerifiedCacheSize = c.size })
			req := Request{SubjectToken: bb.issuers[jose.RS256].token(b, "svc-inproc@clients", "items:read")}
			ctx := context.Background()
			if _, err := bb.ex.Exchange(ctx, req); err != nil {
				b.Fatal(err)
			}
			before := bb.fake.Requests()
			b.ReportAllocs()
			for b.Loop() {
				res, err := bb.ex.Exchange(ctx, req)
				if err != nil || res.Outcome != Reused {
					b.Fatalf("exchange: %v %v", res, err)
				}
			}
			reportDirectus(b, bb.fake, before)
		})
	}
}

// BenchmarkScopeNormalise is what verification does to scope claims: a
// space-separated string (Auth0 scope) or a list (SuperTokens scp) into one
// sorted set, and the narrowing of a requested scope parameter.
func BenchmarkScopeNormalise(b *testing.B) {
	str := json.RawMessage(`"items:read items:write files:read users:read my_service#read items:read audit:write"`)
	list := json.RawMessage(`["items:read","items:write","files:read","users:read","my_service#read","items:read","audit:write"]`)
	b.Run("string", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s := stringOrList(str, true)
			sort.Strings(s)
			_ = slices.Compact(s)
		}
	})
	b.Run("list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s := stringOrList(list, true)
			sort.Strings(s)
			_ = slices.Compact(s)
		}
	})
	b.Run("requested", func(b *testing.B) {
		req := strings.Fields("items:write items:read items:read")
		b.ReportAllocs()
		for b.Loop() {
			_ = sortedUnique(req)
		}
	})
}

func benchRecord(i int) Record {
	client := fmt.Sprintf("svc-store-%d@clients", i)
	return Record{
		UserID: UserID(uuid.Nil, nil, client), Issuer: "auth0", Client: client, Token: "dbr_" + strings.Repeat("x", 43),
		Expiry: time.Now().Add(15 * time.Minute), Scopes: []string{"items:read", "my_service#read"},
		// The exchange keeps only the claims some rule looks at: none here.
		Audiences: []string{benchAudience},
		Role:      "9c1f2a52-6b0e-4a43-9d7d-6f1b8e0f4a11", Policies: []directus.Access{{Policy: "2b1e", ID: "77"}},
		LastExchange: time.Now(),
	}
}

// BenchmarkStore measures the state store: Put is durable (a bbolt
// transaction with its fsync, the token sealed with AES-GCM) on a file and
// a map write in memory; Get is a copy from memory either way; Touch is what
// a returning client costs the store. (BenchmarkStoreMemory100k measures the
// memory of 100,000 known clients.)
func BenchmarkStore(b *testing.B) {
	open := map[string]func(b *testing.B) *Store{
		"memory": func(b *testing.B) *Store { return NewMemoryStore() },
		"bbolt": func(b *testing.B) *Store {
			key := make([]byte, 32)
			_, _ = rand.Read(key)
			s, err := OpenStore(filepath.Join(b.TempDir(), "state.db"), key)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
	}
	const known = 10000
	for _, kind := range []string{"memory", "bbolt"} {
		b.Run(kind, func(b *testing.B) {
			b.Run("Put", func(b *testing.B) {
				s := open[kind](b)
				recs := make([]Record, 1024)
				for i := range recs {
					recs[i] = benchRecord(i)
				}
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					if err := s.Put(recs[i%len(recs)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			// seeded opens a store holding n records.
			seeded := func(b *testing.B, n int) (*Store, []Record) {
				s := open[kind](b)
				recs := make([]Record, n)
				for i := range recs {
					recs[i] = benchRecord(i)
				}
				if err := s.PutAll(recs); err != nil {
					b.Fatal(err)
				}
				return s, recs
			}
			b.Run("Get", func(b *testing.B) {
				s, recs := seeded(b, known)
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					if _, ok := s.Get(recs[i%known].UserID); !ok {
						b.Fatal("record missing")
					}
					i++
				}
			})
			b.Run("Touch", func(b *testing.B) {
				s, recs := seeded(b, known)
				now := time.Now()
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					now = now.Add(time.Millisecond)
					s.Touch(recs[i%known].UserID, now)
					i++
				}
			})
		})
	}
}
