package main

import (
	"log/slog"
	"os"
	"regexp"
	"strings"
)

// maskMark stands where the mask removed something. It differs from the
// Directus client's "[redacted]" (a Directus message that echoed a value it
// was sent, which is expected): a mark in a log means that some code path
// tried to log a secret, a defect to find (the e2e suite fails on it).
const maskMark = "[masked]"

// secretMask masks, in every attribute of every log line (the message
// included), what looks like a secret the bridge handles, whatever path
// brought it there: a Directus error that quotes a value it was sent, cut
// short or not, a token of the bridge's (its prefix and what follows), a
// JWT, or the value of the bridge's own Directus and admin tokens. The
// code logs fingerprints, never secrets; this is the net under it.
type secretMask struct {
	prefix string         // tokens.prefix ("" : none)
	tokens *regexp.Regexp // a prefixed token, or a JWT
	known  []string       // secrets by value
}

func newSecretMask(cfg *Config) *secretMask {
	m := &secretMask{prefix: cfg.Tokens.Prefix}
	if m.prefix == "" {
		m.prefix = "dbr_"
	}
	m.tokens = regexp.MustCompile(regexp.QuoteMeta(m.prefix) + `[A-Za-z0-9_-]{4,}|eyJ[A-Za-z0-9_-]{4,}(\.[A-Za-z0-9_-]*){0,2}`)
	for _, env := range []string{cfg.Directus.TokenEnv, cfg.Admin.TokenEnv} {
		if v := os.Getenv(env); env != "" && len(v) >= 8 {
			m.known = append(m.known, v)
		}
	}
	return m
}

// suspect reports cheaply whether s may hold a secret.
func (m *secretMask) suspect(s string) bool {
	if strings.Contains(s, m.prefix) || strings.Contains(s, "eyJ") {
		return true
	}
	for _, k := range m.known {
		if strings.Contains(s, k) {
			return true
		}
	}
	return false
}

func (m *secretMask) mask(s string) string {
	for _, k := range m.known {
		s = strings.ReplaceAll(s, k, maskMark)
	}
	return m.tokens.ReplaceAllString(s, maskMark)
}

// replaceAttr is slog.HandlerOptions.ReplaceAttr.
func (m *secretMask) replaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); m.suspect(s) {
			a.Value = slog.StringValue(m.mask(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			if s := err.Error(); m.suspect(s) {
				a.Value = slog.StringValue(m.mask(s))
			}
		}
	}
	return a
}
