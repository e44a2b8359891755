package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// where is a place of a request where Directus looks for an access token.
type where int

const (
	inHeader where = iota // Authorization: Bearer
	inQuery               // the access_token query parameter
)

// credential is one access token a request carries.
type credential struct {
	where where
	value string
	// malformed: not a form Directus reads as a token (a Bearer header of
	// more than two words, an access_token[...] array or object), but
	// holding one. Never swapped: refused when value is the bridge's.
	malformed bool
}

// credentials lists the access tokens h and rawQuery carry where Directus
// reads them: Authorization headers of the form "Bearer TOKEN" (the scheme
// in any case) and access_token query parameters (keys percent-decoded, as
// Directus's query parser does). Cookies are Directus's own sessions and
// are not looked at.
func credentials(h http.Header, rawQuery string) []credential {
	var out []credential
	for _, v := range h["Authorization"] {
		f := strings.Fields(v)
		if len(f) < 2 || !strings.EqualFold(f[0], "bearer") {
			continue
		}
		for _, tok := range f[1:] {
			out = append(out, credential{where: inHeader, value: tok, malformed: len(f) != 2 || v != f[0]+" "+f[1]})
		}
	}
	if rawQuery == "" || !strings.Contains(rawQuery, "access_token") && !strings.Contains(rawQuery, "%") {
		return out // the common case: nothing to decode
	}
	for _, part := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil || !strings.HasPrefix(key, "access_token") {
			continue
		}
		val, err := url.QueryUnescape(v)
		bad := err != nil // Directus's parser then takes v as it is
		if bad {
			val = v
		}
		switch {
		case key == "access_token":
			out = append(out, credential{where: inQuery, value: val, malformed: k != key || bad})
		case strings.HasPrefix(key, "access_token["):
			out = append(out, credential{where: inQuery, value: val, malformed: true})
		}
	}
	return out
}

// replace puts token in place of old, the value of c, in out: a copy of
// the request that carried c, or of one sent already with old in c's place.
// The place is found again by its value: net/http's reverse proxy drops
// query parameters it cannot parse before the request is rewritten.
func (c credential) replace(out *http.Request, old, token string) {
	switch c.where {
	case inHeader:
		for i, v := range out.Header["Authorization"] {
			if f := strings.Fields(v); len(f) == 2 && strings.EqualFold(f[0], "bearer") && f[1] == old {
				out.Header["Authorization"][i] = "Bearer " + token
			}
		}
	case inQuery:
		parts := strings.Split(out.URL.RawQuery, "&")
		for i, part := range parts {
			k, v, _ := strings.Cut(part, "=")
			key, err1 := url.QueryUnescape(k)
			val, err2 := url.QueryUnescape(v)
			if err1 == nil && err2 == nil && key == "access_token" && val == old {
				parts[i] = "access_token=" + url.QueryEscape(token)
			}
		}
		out.URL.RawQuery = strings.Join(parts, "&")
	}
}
