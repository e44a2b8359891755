package bridge

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit is a token bucket: Rate requests per second on average, Burst at
// once. A zero Rate disables the limit.
type RateLimit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// LimitsConfig bounds how fast one caller can exchange, so that one
// misbehaving client cannot exhaust Directus.
type LimitsConfig struct {
	// PerIP limits requests by remote address (default 100/s, burst 200).
	PerIP RateLimit `yaml:"per_ip"`
	// PerClient limits exchanges by verified client (default 20/s, burst 40).
	PerClient RateLimit `yaml:"per_client"`
}

// SetDefaults fills in zero limits; a negative rate disables a limit.
func (c *LimitsConfig) SetDefaults() {
	if c.PerIP.Rate == 0 {
		c.PerIP = RateLimit{Rate: 100, Burst: 200}
	}
	if c.PerClient.Rate == 0 {
		c.PerClient = RateLimit{Rate: 20, Burst: 40}
	}
}

// limiter keeps one token bucket per key and forgets idle ones.
type limiter struct {
	limit RateLimit
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*tokenBucket
	swept   time.Time
}

type tokenBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const limiterIdle = 10 * time.Minute

func newLimiter(l RateLimit, now func() time.Time) *limiter {
	if l.Rate <= 0 {
		return nil
	}
	if l.Burst < 1 {
		l.Burst = int(math.Ceil(l.Rate))
	}
	return &limiter{limit: l, now: now, buckets: map[string]*tokenBucket{}}
}

// allow takes a token for key; when there is none it returns how long to
// wait. A nil limiter allows everything.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > limiterIdle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > limiterIdle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &tokenBucket{lim: rate.NewLimiter(rate.Limit(l.limit.Rate), l.limit.Burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
