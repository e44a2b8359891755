package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/proxy"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// Config is the bridge's configuration file. Unknown keys are errors;
// secrets are never in the file, only the names of the environment
// variables that hold them.
type Config struct {
	// Listen is the address of the HTTP server (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// TLS serves HTTPS when both files are set (for teams without a proxy).
	TLS TLSConfig `yaml:"tls"`
	// TrustedProxies are CIDRs of proxies whose X-Forwarded-For is believed.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Limits are per-IP and per-client rate limits on POST /oauth/token.
	Limits    bridge.LimitsConfig    `yaml:"limits"`
	Directus  DirectusConfig         `yaml:"directus"`
	State     StateConfig            `yaml:"state"`
	Tokens    bridge.TokenConfig     `yaml:"tokens"`
	Users     bridge.UserConfig      `yaml:"users"`
	Issuers   []bridge.IssuerConfig  `yaml:"issuers"`
	Rules     mapping.Rules          `yaml:"rules"`
	Reconcile bridge.ReconcileConfig `yaml:"reconcile"`
	Log       LogConfig              `yaml:"log"`
	// Admin is the operator's listener (reconcile on a running server);
	// off unless admin.listen is set.
	Admin AdminConfig `yaml:"admin"`
	// Proxy is proxy mode: a listener in front of Directus that swaps IdP
	// tokens for static tokens on the way in; off unless proxy.listen is
	// set.
	Proxy ProxyConfig `yaml:"proxy"`

	// lines maps the YAML paths of the file it was read from to their
	// lines, for Validate's messages.
	lines map[string]int `yaml:"-"`
}

// AdminConfig is the operator's listener, apart from the exchange listener
// so that it is not reachable where clients are.
type AdminConfig struct {
	// Listen is its address, e.g. 127.0.0.1:8081 (default: none, no
	// admin listener).
	Listen string `yaml:"listen"`
	// TokenEnv names the environment variable with the bearer token that
	// callers must present (default DIRECTUS_BRIDGE_ADMIN_TOKEN; at least
	// 32 characters; required when Listen is set).
	TokenEnv string `yaml:"token_env"`
}

// ProxyConfig is proxy mode's listener (see package bridge/proxy).
type ProxyConfig struct {
	// Listen is its address, e.g. 0.0.0.0:8055 (default: none, no proxy).
	// It serves HTTPS with the tls files when they are set.
	Listen string `yaml:"listen"`
	// Upstream is Directus's URL as the proxy reaches it (default
	// directus.url).
	Upstream string `yaml:"upstream"`
	// MaxConnections bounds the requests forwarded at once (default 256);
	// MaxWebsockets the websockets open at once (default 1024).
	MaxConnections int `yaml:"max_connections"`
	MaxWebsockets  int `yaml:"max_websockets"`
	// QueueTimeout: how long a request waits for a free connection before
	// a 503 (default 5s).
	QueueTimeout bridge.Duration `yaml:"queue_timeout"`
	// ResponseTimeout bounds the wait for Directus's response headers
	// (default 60s); bodies stream without a bound.
	ResponseTimeout bridge.Duration `yaml:"response_timeout"`
}

// DirectusConfig says where Directus is and how to reach it.
type DirectusConfig struct {
	// URL of Directus, e.g. http://directus:8055.
	URL string `yaml:"url"`
	// TokenEnv names the environment variable holding the static token of a
	// Directus user with admin access (default DIRECTUS_BRIDGE_DIRECTUS_TOKEN).
	TokenEnv string `yaml:"token_env"`
	// Timeout of one request (default 10s).
	Timeout bridge.Duration `yaml:"timeout"`
	// Retries of a request that failed with 429, 502-504 or a transport
	// error (default 2; 0 uses the default, -1 disables).
	Retries int `yaml:"retries"`
}

// StateConfig says where the bridge keeps its state.
type StateConfig struct {
	// Driver is bbolt (a local file, the default) or postgres.
	Driver string `yaml:"driver"`
	// Path of the state file (bbolt only).
	Path string `yaml:"path"`
	// DSNEnv names the environment variable with the PostgreSQL DSN
	// (postgres only; default DIRECTUS_BRIDGE_STATE_DSN). The DSN holds a
	// password: it is never read from the file.
	DSNEnv string `yaml:"dsn_env"`
	// KeyEnv names the environment variable with the base64 32-byte key that
	// seals tokens in the state (default DIRECTUS_BRIDGE_STATE_KEY).
	// When it is unset, KeyFile is used.
	KeyEnv string `yaml:"key_env"`
	// KeyFile holds the key; created (0600) with a random key when missing
	// (default Path + ".key" with bbolt; no default with postgres).
	KeyFile string `yaml:"key_file"`
	// Standby (postgres only): when another process holds the state, serve
	// waits as a standby (alive, not ready, exchanges 503) and takes over
	// when the holder goes, instead of refusing to start.
	Standby bool `yaml:"standby"`
	// Shared (postgres only): several serve processes use the state at
	// once, all serving (see bridge.NewSharedStore, bridge.Leader).
	Shared bool `yaml:"shared"`
	// MaxStale (with Shared): how old a replica's news of the others'
	// writes may be while it hands out tokens from memory (default 2s).
	MaxStale bridge.Duration `yaml:"max_stale"`
}

// State drivers.
const (
	driverBbolt    = "bbolt"
	driverPostgres = "postgres"
)

// TLSConfig names a certificate and key in PEM files.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// LogConfig shapes the logs.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}

// LoadConfig reads and strictly decodes the file at path, then applies
// defaults. It does not validate: call Validate.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig decodes a configuration and applies defaults. Unknown keys,
// keys given twice and values of the wrong type are errors, all of them
// reported at once in a *ConfigError. It does not validate: call Validate.
func ParseConfig(b []byte) (*Config, error) {
	c, ps := decodeConfig(b)
	if len(ps) > 0 {
		return nil, &ConfigError{Problems: ps}
	}
	return c, nil
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.Directus.TokenEnv == "" {
		c.Directus.TokenEnv = "DIRECTUS_BRIDGE_DIRECTUS_TOKEN"
	}
	if c.Directus.Timeout == 0 {
		c.Directus.Timeout = bridge.Duration(10 * time.Second)
	}
	if c.State.KeyEnv == "" {
		c.State.KeyEnv = "DIRECTUS_BRIDGE_STATE_KEY"
	}
	if c.State.Driver == "" {
		c.State.Driver = driverBbolt
	}
	if c.State.DSNEnv == "" {
		c.State.DSNEnv = "DIRECTUS_BRIDGE_STATE_DSN"
	}
	if c.State.KeyFile == "" && c.State.Path != "" && c.State.Driver == driverBbolt {
		c.State.KeyFile = c.State.Path + ".key"
	}
	c.Reconcile.SetDefaults()
	c.Limits.SetDefaults()
	if c.Admin.TokenEnv == "" {
		c.Admin.TokenEnv = "DIRECTUS_BRIDGE_ADMIN_TOKEN"
	}
	if c.Proxy.Upstream == "" {
		c.Proxy.Upstream = c.Directus.URL
	}
	if c.Proxy.MaxConnections == 0 {
		c.Proxy.MaxConnections = proxy.DefaultMaxConnections
	}
	if c.Proxy.MaxWebsockets == 0 {
		c.Proxy.MaxWebsockets = proxy.DefaultMaxWebsockets
	}
	if c.Proxy.QueueTimeout == 0 {
		c.Proxy.QueueTimeout = bridge.Duration(proxy.DefaultQueueTimeout)
	}
	if c.Proxy.ResponseTimeout == 0 {
		c.Proxy.ResponseTimeout = bridge.Duration(proxy.DefaultResponseTimeout)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

// Validate reports every problem at once, as a *ConfigError (with lines
// when c was read from a file). It reads the environment (to check that
// the secrets it names are set) and has no side effects.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return &ConfigError{Problems: ps}
	}
	return nil
}

// line is the line of path in the file c was read from, or of the nearest
// enclosing key in it; 0 when there is none.
func (c *Config) line(path string) int {
	for path != "" {
		if l, ok := c.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// problems lists every semantic problem of c, each with its YAML path.
func (c *Config) problems() []Problem {
	var ps []Problem
	bad := func(path, format string, a ...any) {
		ps = append(ps, Problem{Path: path, Line: c.line(path), Msg: fmt.Sprintf(format, a...)})
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port", c.Listen)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "set both cert_file and key_file, or neither")
	}
	for _, f := range []struct{ key, file string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.file != "" {
			if _, err := os.Stat(f.file); err != nil {
				bad(f.key, "%v", err)
			}
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i+1), "%q is not a CIDR", p)
		}
	}
	for _, err := range c.Limits.Validate() {
		// "per_ip.rate must be ...": the key, then what is wrong.
		key, msg, ok := strings.Cut(err.Error(), " ")
		if !ok || strings.Trim(key, "abcdefghijklmnopqrstuvwxyz0123456789_.") != "" {
			key, msg = "", err.Error()
		}
		bad(strings.TrimSuffix("limits."+key, "."), "%s", msg)
	}
	if u, err := url.Parse(c.Directus.URL); err == nil && u.User != nil {
		bad("directus.url", "must not hold credentials (user:password@ before %s): the bridge reaches Directus with the token of directus.token_env", capped(u.Host))
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("directus.url", "want an http(s) URL, got %q", capped(c.Directus.URL))
	}
	if os.Getenv(c.Directus.TokenEnv) == "" {
		bad("directus.token_env", "environment variable %s is not set", capped(c.Directus.TokenEnv))
	}
	if c.Directus.Timeout < 0 {
		bad("directus.timeout", "must be positive")
	}
	if c.Directus.Retries < -1 || c.Directus.Retries > 10 {
		bad("directus.retries", "must be between -1 and 10, got %d", c.Directus.Retries)
	}
	switch c.State.Driver {
	case driverBbolt:
		if c.State.Path == "" {
			bad("state.path", "required")
		}
		if c.State.Standby {
			bad("state.standby", "is for state.driver postgres (a file is held by one process on one machine)")
		}
		if c.State.Shared {
			bad("state.shared", "is for state.driver postgres (a file is used by one process on one machine)")
		}
	case driverPostgres:
		if c.State.Path != "" {
			bad("state.path", "is for state.driver bbolt; with postgres the state is in the database (remove it)")
		}
		if dsn := os.Getenv(c.State.DSNEnv); dsn == "" {
			bad("state.dsn_env", "environment variable %s is not set (the PostgreSQL DSN, e.g. postgres://user:password@host:5432/database)", capped(c.State.DSNEnv))
		} else if pgstate.CheckDSN(dsn) != nil {
			bad("state.dsn_env", "environment variable %s does not hold a PostgreSQL DSN (want postgres://user:password@host:port/database?options, or key=value pairs)", capped(c.State.DSNEnv))
		}
		if c.State.Shared && c.State.Standby {
			bad("state.standby", "is for one process at a time; with state.shared every replica serves (remove one of them)")
		}
		if os.Getenv(c.State.KeyEnv) == "" && c.State.KeyFile == "" {
			bad("state.key_env", "environment variable %s is not set and state.key_file is not given: with postgres, one of them holds the key that seals tokens", capped(c.State.KeyEnv))
		}
	default:
		bad("state.driver", "want bbolt or postgres, got %q", capped(c.State.Driver))
	}
	if c.Tokens.TTL < 0 || (c.Tokens.TTL != 0 && c.Tokens.TTL.D() < time.Second) || c.Tokens.TTL.D() > 24*time.Hour {
		bad("tokens.ttl", "must be between 1s and 24h, got %s", c.Tokens.TTL)
	}
	ttl := c.Tokens.TTL
	if ttl == 0 {
		ttl = bridge.Duration(15 * time.Minute)
	}
	if c.Tokens.RotateBefore < 0 || c.Tokens.RotateBefore >= ttl {
		bad("tokens.rotate_before", "must be below tokens.ttl (%s)", ttl)
	}
	if c.State.MaxStale < 0 || (c.State.MaxStale != 0 && c.State.MaxStale.D() < time.Second) || c.State.MaxStale.D() > time.Minute {
		// Below a second the feed's own pings (every 250ms) could not keep
		// it fresh on a busy database: nothing would be answered from memory.
		bad("state.max_stale", "must be between 1s and 1m (default 2s), got %s", c.State.MaxStale)
	}
	if c.Tokens.RevokeInterval < 0 {
		bad("tokens.revoke_interval", "must be positive")
	}
	if strings.ContainsAny(c.Tokens.Prefix, ". \t\n") || len(c.Tokens.Prefix) > 32 {
		bad("tokens.prefix", "at most 32 characters, no dots or white space")
	}
	if c.Users.Namespace != "" {
		if _, err := uuid.Parse(c.Users.Namespace); err != nil {
			bad("users.namespace", "not a UUID: %v", err)
		}
	}
	if len(c.Issuers) == 0 {
		bad("issuers", "at least one issuer is required")
	}
	names := map[string]bool{}
	for _, is := range c.Issuers {
		names[is.Name] = true
	}
	for _, err := range bridge.ValidateIssuers(c.Issuers) {
		var ie *bridge.IssuerError
		if !errors.As(err, &ie) {
			bad("issuers", "%v", err)
			continue
		}
		path := fmt.Sprintf("issuers[%d]", ie.Index+1)
		if ie.Field != "" {
			path += "." + ie.Field
		}
		bad(path, "%v", err) // names the issuer
		if ie.With >= 0 {
			ps[len(ps)-1].about = []string{fmt.Sprintf("issuers[%d]", ie.With+1), fmt.Sprintf("issuers[%d]", ie.Index+1)}
		}
	}
	if len(c.Rules) == 0 {
		bad("rules", "at least one rule is required (no rule denies every client)")
	}
	for i, r := range c.Rules {
		if r.Issuer != "" && !names[r.Issuer] {
			bad(fmt.Sprintf("rules[%d].issuer", i+1), "names issuer %q, which is not configured", capped(r.Issuer))
		}
	}
	if err := c.Rules.Validate(); err != nil {
		var re *mapping.RulesError
		if !errors.As(err, &re) {
			bad("rules", "%v", err)
		} else {
			for _, p := range re.Problems {
				path := fmt.Sprintf("rules[%d]", p.Index+1)
				if p.Field != "" {
					path += "." + p.Field
				}
				bad(path, "%s", p.Reason)
				if p.ShadowedBy >= 0 {
					ps[len(ps)-1].about = []string{fmt.Sprintf("rules[%d]", p.ShadowedBy+1), fmt.Sprintf("rules[%d]", p.Index+1)}
				}
			}
		}
	}
	if c.Reconcile.Schedule != "off" {
		if _, err := cron.ParseStandard(c.Reconcile.Schedule); err != nil {
			bad("reconcile.schedule", "%v (a cron spec, @every 5m, or off)", err)
		}
	}
	switch c.Reconcile.Drift {
	case bridge.DriftRestore, bridge.DriftKeep, bridge.DriftReport:
	default:
		bad("reconcile.drift", "want restore, keep or report, got %q", capped(c.Reconcile.Drift))
	}
	if c.Reconcile.DeleteAfter < 0 {
		bad("reconcile.delete_after", "must not be negative (0 = never)")
	}
	if c.Reconcile.PageSize > 10000 {
		bad("reconcile.page_size", "at most 10000, got %d", c.Reconcile.PageSize)
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			bad("admin.listen", "%q is not host:port", capped(c.Admin.Listen))
		} else if c.Admin.Listen == c.Listen {
			bad("admin.listen", "must differ from listen (%s): the admin endpoints are not for clients", c.Listen)
		}
		if n := len(os.Getenv(c.Admin.TokenEnv)); n < 32 {
			if n == 0 {
				bad("admin.token_env", "environment variable %s is not set (admin.listen needs a token of at least 32 characters)", capped(c.Admin.TokenEnv))
			} else {
				bad("admin.token_env", "environment variable %s must hold at least 32 characters (has %d)", capped(c.Admin.TokenEnv), n)
			}
		}
	}
	if c.Proxy.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Proxy.Listen); err != nil {
			bad("proxy.listen", "%q is not host:port", capped(c.Proxy.Listen))
		} else if c.Proxy.Listen == c.Listen || c.Proxy.Listen == c.Admin.Listen {
			bad("proxy.listen", "must differ from listen and admin.listen: it forwards everything it gets to Directus")
		}
		if u, err := url.Parse(c.Proxy.Upstream); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			bad("proxy.upstream", "want an http(s) URL without query, fragment or user info") // not shown: it may hold credentials
		}
	}
	if n := c.Proxy.MaxConnections; n < 1 || n > 100000 {
		bad("proxy.max_connections", "want 1 to 100000, got %d", n)
	}
	if n := c.Proxy.MaxWebsockets; n < 1 || n > 1000000 {
		bad("proxy.max_websockets", "want 1 to 1000000, got %d", n)
	}
	for _, d := range []struct {
		path string
		v    bridge.Duration
	}{{"proxy.queue_timeout", c.Proxy.QueueTimeout}, {"proxy.response_timeout", c.Proxy.ResponseTimeout}} {
		if d.v.D() < 0 || d.v.D() > time.Hour {
			bad(d.path, "want 0 to 1h, got %s", d.v.D())
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "want debug, info, warn or error, got %q", capped(c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "want json or text, got %q", capped(c.Log.Format))
	}
	return ps
}
