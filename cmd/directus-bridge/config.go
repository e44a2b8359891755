package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/directus-bridge/directus-bridge/bridge"
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
	// Path of the state file (bbolt).
	Path string `yaml:"path"`
	// KeyEnv names the environment variable with the base64 32-byte key that
	// seals tokens in the state file (default DIRECTUS_BRIDGE_STATE_KEY).
	// When it is unset, KeyFile is used.
	KeyEnv string `yaml:"key_env"`
	// KeyFile holds the key; created (0600) with a random key when missing
	// (default Path + ".key").
	KeyFile string `yaml:"key_file"`
}

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

// ParseConfig decodes a configuration; unknown keys are errors.
func ParseConfig(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	c := &Config{}
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.setDefaults()
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
	if c.State.KeyFile == "" && c.State.Path != "" {
		c.State.KeyFile = c.State.Path + ".key"
	}
	c.Reconcile.SetDefaults()
	c.Limits.SetDefaults()
	if c.Admin.TokenEnv == "" {
		c.Admin.TokenEnv = "DIRECTUS_BRIDGE_ADMIN_TOKEN"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

// Validate reports every problem at once. It reads the environment (to check
// that the secrets it names are set) and has no side effects.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %q is not host:port", c.Listen)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls: set both cert_file and key_file, or neither")
	}
	for _, f := range []string{c.TLS.CertFile, c.TLS.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				bad("tls: %v", err)
			}
		}
	}
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("trusted_proxies: %q is not a CIDR", p)
		}
	}
	for _, err := range c.Limits.Validate() {
		bad("limits: %v", err)
	}
	if u, err := url.Parse(c.Directus.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("directus.url: want an http(s) URL, got %q", c.Directus.URL)
	}
	if os.Getenv(c.Directus.TokenEnv) == "" {
		bad("directus.token_env: environment variable %s is not set", c.Directus.TokenEnv)
	}
	if c.Directus.Timeout < 0 {
		bad("directus.timeout: must be positive")
	}
	if c.Directus.Retries < -1 || c.Directus.Retries > 10 {
		bad("directus.retries: must be between -1 and 10")
	}
	if c.State.Path == "" {
		bad("state.path is required")
	}
	if c.Tokens.TTL < 0 || (c.Tokens.TTL != 0 && c.Tokens.TTL.D() < time.Second) || c.Tokens.TTL.D() > 24*time.Hour {
		bad("tokens.ttl: must be between 1s and 24h")
	}
	ttl := c.Tokens.TTL
	if ttl == 0 {
		ttl = bridge.Duration(15 * time.Minute)
	}
	if c.Tokens.RotateBefore < 0 || c.Tokens.RotateBefore >= ttl {
		bad("tokens.rotate_before: must be below tokens.ttl (%s)", ttl)
	}
	if c.Tokens.RevokeInterval < 0 {
		bad("tokens.revoke_interval: must be positive")
	}
	if strings.ContainsAny(c.Tokens.Prefix, ". \t\n") || len(c.Tokens.Prefix) > 32 {
		bad("tokens.prefix: at most 32 characters, no dots or white space")
	}
	if c.Users.Namespace != "" {
		if _, err := uuid.Parse(c.Users.Namespace); err != nil {
			bad("users.namespace: not a UUID: %v", err)
		}
	}
	if len(c.Issuers) == 0 {
		bad("issuers: at least one issuer is required")
	}
	names := map[string]bool{}
	for _, is := range c.Issuers {
		names[is.Name] = true
	}
	for _, err := range bridge.ValidateIssuers(c.Issuers) {
		errs = append(errs, fmt.Errorf("issuers: %w", err))
	}
	if len(c.Rules) == 0 {
		bad("rules: at least one rule is required (no rule denies every client)")
	}
	for i, r := range c.Rules {
		if r.Issuer != "" && !names[r.Issuer] {
			bad("rules: rule %d names issuer %q, which is not configured", i+1, r.Issuer)
		}
	}
	if err := c.Rules.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Reconcile.Schedule != "off" {
		if _, err := cron.ParseStandard(c.Reconcile.Schedule); err != nil {
			bad("reconcile.schedule: %v (a cron spec, @every 5m, or off)", err)
		}
	}
	switch c.Reconcile.Drift {
	case bridge.DriftRestore, bridge.DriftKeep, bridge.DriftReport:
	default:
		bad("reconcile.drift: want restore, keep or report")
	}
	if c.Reconcile.DeleteAfter < 0 {
		bad("reconcile.delete_after: must not be negative (0 = never)")
	}
	if c.Reconcile.PageSize > 10000 {
		bad("reconcile.page_size: at most 10000")
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			bad("admin.listen: %q is not host:port", c.Admin.Listen)
		} else if c.Admin.Listen == c.Listen {
			bad("admin.listen: must differ from listen (%s): the admin endpoints are not for clients", c.Listen)
		}
		if n := len(os.Getenv(c.Admin.TokenEnv)); n < 32 {
			bad("admin.token_env: environment variable %s must hold at least 32 characters (has %d)", c.Admin.TokenEnv, n)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level: want debug, info, warn or error")
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format: want json or text")
	}
	return errors.Join(errs...)
}
