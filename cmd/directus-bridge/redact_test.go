package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Whatever reaches a log line, a token of the bridge's (whole or cut
// short), a JWT or the bridge's own Directus token does not.
func TestLogMasksSecrets(t *testing.T) {
	t.Setenv("TEST_DIRECTUS_TOKEN", "directus-static-token-value-123")
	cfg := &Config{Log: LogConfig{Level: "debug"}}
	cfg.Directus.TokenEnv = "TEST_DIRECTUS_TOKEN"
	cfg.Tokens.Prefix = "acme_"
	for _, format := range []string{"json", "text"} {
		cfg.Log.Format = format
		var buf bytes.Buffer
		log := newLogger(cfg, &buf)
		secrets := []string{
			"acme_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo", // a token
			"acme_Zm9vYmFy", // cut short
			"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2lnbmF0dXJl",
			"directus-static-token-value-123",
		}
		for _, s := range secrets {
			log.Warn("Directus refused the write: value "+s, "err", errors.New(`Value "`+s+`" for field "token" has to be unique`), "detail", s)
		}
		out := buf.String()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s log holds %q:\n%s", format, s, out)
			}
		}
		if n := strings.Count(out, maskMark); n < 3*len(secrets) {
			t.Errorf("%s log: %d masks, want %d:\n%s", format, n, 3*len(secrets), out)
		}
		if !strings.Contains(out, "has to be unique") {
			t.Errorf("%s log lost the rest of the message:\n%s", format, out)
		}
	}
}
