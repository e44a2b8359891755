package bridge

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// discardResponse is a reusable http.ResponseWriter that keeps nothing.
type discardResponse struct {
	h      http.Header
	status int
}

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) WriteHeader(status int)      { d.status = status }
func (d *discardResponse) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkTokenHandler is the handler's own cost for a returning client
// without the network or net/http's connection handling, next
// to the no-op handler of cmd/bridge-bench (read the body, parse the form,
// write a 200-byte JSON): what the bridge adds per request. The bridge is
// wired as serve wires it: JSON logs at info to a file, metrics, rate limits
// off.
func BenchmarkTokenHandler(b *testing.B) {
	answer := []byte(`{"access_token":"dbr_` + strings.Repeat("x", 43) + `","expires_in":900,"issued_token_type":"` +
		TokenTypeAccessToken + `","scope":"items:read","token_type":"Bearer"}` + "\n")
	noop := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
		if err != nil {
			return
		}
		if form, err := url.ParseQuery(string(body)); err != nil || form.Get("subject_token") == "" {
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		_, _ = w.Write(answer)
	})
	run := func(b *testing.B, h http.Handler, bodies []string) {
		req, err := http.NewRequest(http.MethodPost, "http://bridge.bench/oauth/token", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "127.0.0.1:5555"
		w := &discardResponse{h: http.Header{}}
		readers := make([]strings.Reader, len(bodies))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			rd := &readers[i%len(bodies)]
			rd.Reset(bodies[i%len(bodies)])
			req.Body, req.ContentLength = io.NopCloser(rd), int64(rd.Len())
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.status != 0 && w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
			w.status = 0
			i++
		}
	}
	for _, clients := range []int{1, 200} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			logFile, err := os.Create(filepath.Join(b.TempDir(), "bridge.log"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { logFile.Close() })
			log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
			bb := newBenchBridge(b, func(o *Options) {
				o.Logger = log
				o.Limits = LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: -1}}
				o.Metrics = NewMetrics(prometheus.NewRegistry(), o.Store, time.Now)
			})
			bi := bb.issuers[jose.RS256]
			var bodies []string
			for i := range clients {
				body := benchForm(bi.token(b, fmt.Sprintf("svc-handler-%d@clients", i), "items:read"))
				bb.exchange(b, body)
				bodies = append(bodies, body)
			}
			b.Run("noop", func(b *testing.B) { run(b, noop, bodies) })
			b.Run("bridge", func(b *testing.B) {
				s := &Server{Exchanger: bb.ex, Logger: log}
				b.Cleanup(s.Close)
				run(b, s.Handler(), bodies)
			})
			// The same with the rule's grant behind a CEL condition too.
			b.Run("bridge-cel", func(b *testing.B) {
				admin, err := directus.New(bb.fake.URL, bb.fake.AdminToken, directus.Options{Retries: -1})
				if err != nil {
					b.Fatal(err)
				}
				m, _, err := LoadMapper(b.Context(), admin, mapping.Rules{{Name: "readers", AnyScopes: []string{"items:read"},
					Condition: `client.endsWith("@clients") && "items:read" in scopes && claims.iss != ""`, Role: "Reader"}})
				if err != nil {
					b.Fatal(err)
				}
				bb.ex.SetMapper(m)
				for _, body := range bodies {
					bb.exchange(b, body)
				}
				s := &Server{Exchanger: bb.ex, Logger: log}
				b.Cleanup(s.Close)
				run(b, s.Handler(), bodies)
			})
		})
	}
}
