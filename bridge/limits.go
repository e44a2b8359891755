package bridge

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
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
	// IPv6Prefix is the length of the IPv6 prefix that shares one per-IP
	// bucket (default 64). A site is routinely given a /64 or more, so
	// keying on the full address would give one attacker 2^64 buckets.
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// IPv4Prefix is the same for IPv4 (default 32: one address, as NAT
	// already puts many callers behind one). IPv4-mapped IPv6 addresses
	// (::ffff:a.b.c.d) count as IPv4.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	// MaxTracked bounds the keys (address prefixes, clients) each limiter
	// remembers (default 100000), so that its memory is bounded however
	// many addresses an attacker has. See limiter for what happens when it
	// is full.
	MaxTracked int `yaml:"max_tracked"`
}

// Defaults of LimitsConfig.
const (
	DefaultIPv6Prefix = 64
	DefaultIPv4Prefix = 32
	DefaultMaxTracked = 100000
)

// SetDefaults fills in zero limits; a negative rate disables a limit.
func (c *LimitsConfig) SetDefaults() {
	if c.PerIP.Rate == 0 {
		c.PerIP = RateLimit{Rate: 100, Burst: 200}
	}
	if c.PerClient.Rate == 0 {
		c.PerClient = RateLimit{Rate: 20, Burst: 40}
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.IPv4Prefix == 0 {
		c.IPv4Prefix = DefaultIPv4Prefix
	}
	if c.MaxTracked == 0 {
		c.MaxTracked = DefaultMaxTracked
	}
}

// Validate lists every problem with c, before or after SetDefaults (a zero
// value means the default); it has no side effects. The caller prefixes the
// errors with where c came from (e.g. "limits: ").
func (c LimitsConfig) Validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, l := range []struct {
		name string
		RateLimit
	}{{"per_ip", c.PerIP}, {"per_client", c.PerClient}} {
		if math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
			bad("%s.rate must be a finite number (negative disables the limit)", l.name)
		}
		if l.Burst < 0 {
			bad("%s.burst must not be negative", l.name)
		}
	}
	if c.IPv6Prefix < 0 || c.IPv6Prefix > 128 {
		bad("ipv6_prefix must be between 1 and 128 (0: the default, %d), got %d", DefaultIPv6Prefix, c.IPv6Prefix)
	}
	if c.IPv4Prefix < 0 || c.IPv4Prefix > 32 {
		bad("ipv4_prefix must be between 1 and 32 (0: the default, %d), got %d", DefaultIPv4Prefix, c.IPv4Prefix)
	}
	if c.MaxTracked < 0 {
		bad("max_tracked must not be negative (0: the default, %d), got %d", DefaultMaxTracked, c.MaxTracked)
	}
	return errs
}

// ipLimiter is the per-IP limiter c describes: keys are client addresses
// (as Server.clientIP tells them), grouped by IPv4Prefix and IPv6Prefix.
func (c LimitsConfig) ipLimiter(now func() time.Time) *limiter {
	c.SetDefaults()
	g := addrGrouping{v4: c.IPv4Prefix, v6: c.IPv6Prefix}
	return makeLimiter(c.PerIP, c.MaxTracked, g.key, now)
}

// clientLimiter is the per-client limiter c describes: keys are taken as
// given (issuer and client of a verified token).
func (c LimitsConfig) clientLimiter(now func() time.Time) *limiter {
	c.SetDefaults()
	return makeLimiter(c.PerClient, c.MaxTracked, nil, now)
}

// newLimiter is a limiter keyed as given and bounded by DefaultMaxTracked.
// Prefer LimitsConfig.ipLimiter and clientLimiter, which honour the
// prefixes and max_tracked.
func newLimiter(l RateLimit, now func() time.Time) *limiter {
	return makeLimiter(l, DefaultMaxTracked, nil, now)
}

// limiterRef holds the limiter in force; a reload replaces it.
type limiterRef struct{ p atomic.Pointer[limiter] }

func (r *limiterRef) allow(key string) (bool, time.Duration) { return r.p.Load().allow(key) }
func (r *limiterRef) set(l *limiter)                         { r.p.Store(l) }
func (r *limiterRef) get() *limiter                          { return r.p.Load() }

// limiter keeps one token bucket per key, for at most max keys.
//
// Memory is bounded by counting keys. Buckets are kept in order of last use,
// and a bucket is forgotten only when it has refilled to its burst: such a
// bucket is indistinguishable from a new one, so forgetting it changes
// nobody's allowance. That is the point of the policy: evicting the oldest
// bucket regardless (plain LRU) would let an attacker with max_tracked
// addresses wipe the debt of a bucket that is being limited (their own, or a
// victim's) by cycling through fresh keys, and so walk around the limit.
//
// Forgetting is lazy: each new key first forgets up to sweepPerInsert full
// buckets from the old end. When the limiter is full and its oldest bucket
// still holds debt, the new key is not tracked: it draws from one shared
// overflow bucket (same rate and burst), so untracked callers are limited
// together. Callers already tracked are unaffected, and no debt is ever
// forgiven. To keep max_tracked buckets in debt an attacker must sustain
// about max_tracked x rate requests per second (10^7/s with the defaults),
// since a bucket refills one token in 1/rate.
type limiter struct {
	limit RateLimit
	max   int
	key   func(string) string // nil: keys as given
	now   func() time.Time

	mu       sync.Mutex
	buckets  map[string]*tokenBucket
	lru      tokenBucket // ring sentinel: lru.next is the newest, lru.prev the oldest
	overflow tokenBucket
}

// tokenBucket is one key's bucket; tokens as of last.
type tokenBucket struct {
	key        string
	tokens     float64
	last       time.Time
	prev, next *tokenBucket
}

// sweepPerInsert bounds the full buckets forgotten per new key, so that no
// request pays for a long sweep (the work stays O(1) amortised: every
// bucket is forgotten at most once).
const sweepPerInsert = 8

func makeLimiter(l RateLimit, maxKeys int, key func(string) string, now func() time.Time) *limiter {
	if !(l.Rate > 0) { // zero, negative (off) or NaN (refused by Validate)
		return nil
	}
	if math.IsInf(l.Rate, 1) {
		return nil // no limit
	}
	if l.Burst < 1 {
		l.Burst = int(math.Ceil(l.Rate))
	}
	if maxKeys < 1 {
		maxKeys = DefaultMaxTracked
	}
	lim := &limiter{limit: l, max: maxKeys, key: key, now: now, buckets: map[string]*tokenBucket{}}
	lim.lru.next, lim.lru.prev = &lim.lru, &lim.lru
	lim.overflow.tokens = float64(l.Burst)
	return lim
}

// allow takes a token for key; when there is none it returns how long to
// wait. A nil limiter allows everything.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	if l.key != nil {
		key = l.key(key)
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b != nil {
		l.unlink(b)
		l.pushFront(b)
	} else {
		b = l.track(key, now)
	}
	return b.take(now, l.limit)
}

// track returns a new bucket for key, or the overflow bucket when the
// limiter is full of buckets that still hold debt. l.mu is held.
func (l *limiter) track(key string, now time.Time) *tokenBucket {
	for range sweepPerInsert {
		old := l.lru.prev
		if old == &l.lru {
			break
		}
		l.unlink(old)
		if !old.full(now, l.limit) {
			// Still in debt: look at it again later, and go on with the
			// next one, so that one indebted bucket cannot shield every
			// refilled one behind it.
			l.pushFront(old)
			continue
		}
		delete(l.buckets, old.key)
	}
	if len(l.buckets) >= l.max {
		return &l.overflow
	}
	b := &tokenBucket{key: key, tokens: float64(l.limit.Burst), last: now}
	l.buckets[key] = b
	l.pushFront(b)
	return b
}

// tracked is the number of keys l remembers.
func (l *limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *limiter) pushFront(b *tokenBucket) {
	b.prev, b.next = &l.lru, l.lru.next
	l.lru.next.prev = b
	l.lru.next = b
}

func (l *limiter) unlink(b *tokenBucket) {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}

// refill brings the bucket's tokens to now. A clock that went back refills
// nothing (and leaves last alone, so the time is not counted twice).
func (b *tokenBucket) refill(now time.Time, l RateLimit) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(float64(l.Burst), b.tokens+d.Seconds()*l.Rate)
		b.last = now
	}
}

// full reports whether the bucket would have refilled to its burst by now.
func (b *tokenBucket) full(now time.Time, l RateLimit) bool {
	d := now.Sub(b.last)
	return d >= 0 && b.tokens+d.Seconds()*l.Rate >= float64(l.Burst)
}

func (b *tokenBucket) take(now time.Time, l RateLimit) (bool, time.Duration) {
	b.refill(now, l)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.Rate * float64(time.Second)))
	return false, max(wait, time.Nanosecond)
}

// addrGrouping turns a client address into its per-IP key: the prefix of
// v4 or v6 bits that holds it. IPv6 addresses that carry an IPv4 address of
// their sender count as that IPv4 address: IPv4-mapped (::ffff:0:0/96, a
// dual-stack socket's view of an IPv4 peer), NAT64 (64:ff9b::/96, RFC 6052:
// otherwise every IPv4 client behind the NAT64 would share one /64) and
// 6to4 (2002::/16, RFC 3056: otherwise one IPv4 address would hold 2^16
// /64s).
type addrGrouping struct{ v4, v6 int }

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

func (g addrGrouping) key(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		// Not an address (clientIP passes RemoteAddr through when it has
		// no port): its own key, never equal to a prefix's.
		return "?" + s
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64Prefix.Contains(a):
			a = netip.AddrFrom4([4]byte(b[12:16]))
		case sixToFour.Contains(a):
			a = netip.AddrFrom4([4]byte(b[2:6]))
		}
	}
	bits := g.v6
	if a.Is4() {
		bits = g.v4
	}
	p, err := a.Prefix(bits)
	if err != nil { // bits out of range: refused by Validate
		return a.String()
	}
	return p.String()
}
