package bridge

import (
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRateLimits(t *testing.T) {
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		o.Limits = LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: 1, Burst: 3}}
	})
	subject := h.auth0Token("busy@clients", "items:read")
	for i := range 3 {
		if r := h.exchange(subject); r.Status != 200 {
			t.Fatalf("exchange %d within the burst: %d %v", i, r.Status, r.Body)
		}
	}
	r := h.exchange(subject)
	if r.Status != 429 || r.str("error") != "temporarily_unavailable" {
		t.Fatalf("over the limit: %d %v, want 429", r.Status, r.Body)
	}
	if s, err := strconv.Atoi(r.RetryAfter); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want whole seconds >= 1", r.RetryAfter)
	}
	// Another client is not affected.
	if r := h.exchange(h.auth0Token("calm@clients", "items:read")); r.Status != 200 {
		t.Errorf("other client: %d %v", r.Status, r.Body)
	}
	// The bucket refills with the (test) clock.
	h.clock.Add(2 * time.Second)
	if r := h.exchange(subject); r.Status != 200 {
		t.Errorf("after refill: %d %v", r.Status, r.Body)
	}
}

func TestRateLimitPerIP(t *testing.T) {
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		o.Limits = LimitsConfig{PerIP: RateLimit{Rate: 1, Burst: 2}, PerClient: RateLimit{Rate: -1}}
	})
	codes := []int{}
	for i := range 3 {
		codes = append(codes, h.exchange(h.auth0Token("ip-"+strconv.Itoa(i), "items:read")).Status)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Errorf("statuses %v, want 200 200 429", codes)
	}
	if n := h.fake.Requests(); n != 2 {
		t.Errorf("Directus requests %d, want 2 (the limited request writes nothing)", n)
	}
}

func TestAddrGrouping(t *testing.T) {
	def := addrGrouping{v4: DefaultIPv4Prefix, v6: DefaultIPv6Prefix}
	wide := addrGrouping{v4: 24, v6: 48}
	for _, tc := range []struct {
		name string
		g    addrGrouping
		a, b string
		same bool
	}{
		{"one /64", def, "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"neighbouring /64s", def, "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv4 by address", def, "192.0.2.1", "192.0.2.2", false},
		{"IPv4-mapped is IPv4", def, "::ffff:192.0.2.1", "192.0.2.1", true},
		{"IPv4-mapped, other address", def, "::ffff:192.0.2.1", "192.0.2.2", false},
		{"NAT64 is IPv4", def, "64:ff9b::c000:201", "192.0.2.1", true},
		{"NAT64, other address", def, "64:ff9b::c000:201", "64:ff9b::c000:202", false},
		{"6to4 is its IPv4", def, "2002:c000:201:1::1", "2002:c000:201:ffff::1", true},
		{"6to4, other IPv4", def, "2002:c000:201::1", "2002:c000:202::1", false},
		{"zone dropped", def, "fe80::1%eth0", "fe80::2", true},
		{"configured /48", wide, "2001:db8:1:2::1", "2001:db8:1:ffff::1", true},
		{"configured /48, other /48", wide, "2001:db8:1::1", "2001:db8:2::1", false},
		{"configured /24", wide, "192.0.2.1", "192.0.2.254", true},
		{"configured /24, mapped", wide, "::ffff:192.0.2.1", "192.0.2.77", true},
		{"not an address is its own key", def, "pipe", "pipe", true},
		{"not an address is not a prefix", def, "192.0.2.1/32", "192.0.2.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka, kb := tc.g.key(tc.a), tc.g.key(tc.b)
			if (ka == kb) != tc.same {
				t.Errorf("key(%s) = %q, key(%s) = %q; same = %v, want %v", tc.a, ka, tc.b, kb, ka == kb, tc.same)
			}
		})
	}
}

func TestIPLimiterGroupsIPv6ByPrefix(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	l := LimitsConfig{PerIP: RateLimit{Rate: 1, Burst: 2}}.ipLimiter(clk.Now)
	for i, a := range []string{"2001:db8:1:2::1", "2001:db8:1:2:dead:beef:0:1"} {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("request %d from the /64 within the burst refused", i)
		}
	}
	if ok, wait := l.allow("2001:db8:1:2:ffff::9"); ok || wait <= 0 {
		t.Errorf("third address of the same /64: allowed = %v, wait %v; want refused, one bucket per /64", ok, wait)
	}
	if ok, _ := l.allow("2001:db8:1:3::1"); !ok {
		t.Errorf("another /64 shares the bucket")
	}
	// IPv4-mapped and plain IPv4 are one caller.
	l.allow("192.0.2.1")
	l.allow("::ffff:192.0.2.1")
	if ok, _ := l.allow("::ffff:c000:201"); ok {
		t.Errorf("IPv4-mapped address has its own bucket, want the IPv4 address's")
	}
	if ok, _ := l.allow("192.0.2.2"); !ok {
		t.Errorf("another IPv4 address shares the bucket")
	}
	if n := l.tracked(); n != 4 {
		t.Errorf("tracked %d keys, want 4 (two /64s, two IPv4 addresses)", n)
	}
}

// addr6 is the i-th address of distinct /64s of 2001:db8::/32.
func addr6(i int) string {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 15: 1}).String()
}

func TestLimiterMemoryBound(t *testing.T) {
	const maxKeys = 1000
	for _, tc := range []struct {
		name  string
		addrs int
		step  time.Duration // clock advance between requests
	}{
		{"pinned clock", 1_000_000, 0}, // nothing refills: the worst case
		{"moving clock", 100_000, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() {
				tc.addrs /= 10
			}
			clk := &clock{t: time.Unix(1e9, 0)}
			l := LimitsConfig{PerIP: RateLimit{Rate: 1, Burst: 2}, MaxTracked: maxKeys}.ipLimiter(clk.Now)
			victim := "2001:db8:ffff:ffff::1"
			for range 2 {
				l.allow(victim)
			}
			if ok, _ := l.allow(victim); ok {
				t.Fatal("victim not limited after its burst")
			}
			most := 0
			for i := range tc.addrs {
				l.allow(addr6(i))
				clk.Add(tc.step)
				if i%1000 == 0 {
					most = max(most, l.tracked())
				}
				if tc.step == 0 && i == tc.addrs/2 {
					// Half way, the victim (still in debt) is limited as before.
					if ok, _ := l.allow(victim); ok {
						t.Errorf("%d fresh addresses reset a limited bucket", i)
					}
				}
			}
			most = max(most, l.tracked())
			if most > maxKeys {
				t.Errorf("tracked up to %d keys, want at most max_tracked %d", most, maxKeys)
			}
			if tc.step == 0 {
				if ok, _ := l.allow(victim); ok {
					t.Errorf("%d fresh addresses reset a limited bucket", tc.addrs)
				}
			}
		})
	}
}

func TestLimiterOverflowIsShared(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	l := makeLimiter(RateLimit{Rate: 1, Burst: 1}, 2, nil, clk.Now)
	l.allow("a")
	l.allow("b") // both in debt: the limiter is full
	if ok, _ := l.allow("c"); !ok {
		t.Fatal("first untracked key refused: the overflow bucket starts full")
	}
	if ok, wait := l.allow("d"); ok || wait <= 0 {
		t.Errorf("second untracked key allowed = %v (wait %v): want it to share the overflow bucket with c", ok, wait)
	}
	if n := l.tracked(); n != 2 {
		t.Errorf("tracked %d, want 2", n)
	}
	// Once a and b refill they are forgotten and new keys get buckets again.
	clk.Add(time.Second)
	if ok, _ := l.allow("e"); !ok {
		t.Errorf("new key refused after the tracked buckets refilled")
	}
	if ok, _ := l.allow("a"); !ok {
		t.Errorf("a refused after refilling")
	}
}

func TestLimiterForgetsRefilledBuckets(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	l := makeLimiter(RateLimit{Rate: 10, Burst: 10}, 1000, nil, clk.Now)
	for i := range 100 {
		l.allow(strconv.Itoa(i))
	}
	clk.Add(time.Second) // all refilled
	for i := range 20 {
		l.allow("new" + strconv.Itoa(i))
	}
	// Each new key forgets up to sweepPerInsert refilled ones.
	if n := l.tracked(); n != 20 {
		t.Errorf("tracked %d keys after 100 idle ones refilled and 20 new ones came, want 20", n)
	}
}

func TestLimiterClockSteps(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	l := makeLimiter(RateLimit{Rate: 1, Burst: 1}, 10, nil, clk.Now)
	l.allow("k")
	clk.Add(-time.Hour)
	if ok, _ := l.allow("k"); ok {
		t.Errorf("a clock stepping back refilled the bucket")
	}
	clk.Add(time.Hour + time.Second)
	if ok, _ := l.allow("k"); !ok {
		t.Errorf("bucket did not refill once the clock was past its last use by 1/rate")
	}
}

func TestLimitsSetDefaults(t *testing.T) {
	var c LimitsConfig
	c.SetDefaults()
	want := LimitsConfig{PerIP: RateLimit{Rate: 100, Burst: 200}, PerClient: RateLimit{Rate: 20, Burst: 40},
		IPv6Prefix: 64, IPv4Prefix: 32, MaxTracked: 100000}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if errs := c.Validate(); len(errs) != 0 {
		t.Errorf("defaults do not validate: %v", errs)
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    LimitsConfig
		want []string // substrings, one per error
	}{
		{"zero is the defaults", LimitsConfig{}, nil},
		{"limits off", LimitsConfig{PerIP: RateLimit{Rate: -1}, PerClient: RateLimit{Rate: -1}}, nil},
		{"edges", LimitsConfig{IPv6Prefix: 128, IPv4Prefix: 1, MaxTracked: 1}, nil},
		{"negative bursts", LimitsConfig{PerIP: RateLimit{Rate: 1, Burst: -1}, PerClient: RateLimit{Rate: 1, Burst: -2}},
			[]string{"per_ip.burst", "per_client.burst"}},
		{"not finite", LimitsConfig{PerIP: RateLimit{Rate: math.NaN()}, PerClient: RateLimit{Rate: math.Inf(1)}},
			[]string{"per_ip.rate", "per_client.rate"}},
		{"prefixes out of range", LimitsConfig{IPv6Prefix: 129, IPv4Prefix: 33}, []string{"ipv6_prefix", "ipv4_prefix"}},
		{"negative prefixes", LimitsConfig{IPv6Prefix: -1, IPv4Prefix: -1}, []string{"ipv6_prefix", "ipv4_prefix"}},
		{"negative max_tracked", LimitsConfig{MaxTracked: -5}, []string{"max_tracked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := tc.c.Validate()
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %d naming %v", len(errs), errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.want[i]) {
					t.Errorf("error %d = %q, want it to name %s", i, err, tc.want[i])
				}
			}
		})
	}
}

// TestRateLimitPerIPv6Prefix checks the wiring: the exchanger's per-IP
// limiter groups the addresses Server.clientIP tells.
func TestRateLimitPerIPv6Prefix(t *testing.T) {
	h := newHarness(t, "12.4.0", func(h *harness, o *Options) {
		o.Limits = LimitsConfig{PerIP: RateLimit{Rate: 1, Burst: 2}, PerClient: RateLimit{Rate: -1}, IPv6Prefix: 56}
	})
	if h.ex.perIP.get().key == nil {
		t.Fatal("NewExchanger builds perIP without the address grouping of Limits.ipLimiter")
	}
	srv := httptest.NewServer((&Server{Exchanger: h.ex,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}).Handler())
	t.Cleanup(srv.Close)
	post := func(from, client string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/oauth/token", strings.NewReader(exchangeForm(h.auth0Token(client, "items:read")).Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", from)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	got := []int{
		post("2001:db8:0:1::1", "v6-a"),
		post("2001:db8:0:2::1", "v6-b"),   // same /56
		post("2001:db8:0:ff::1", "v6-c"),  // same /56, over the burst
		post("2001:db8:0:100::1", "v6-d"), // the next /56
	}
	if diff := cmp.Diff([]int{200, 200, 429, 200}, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}
