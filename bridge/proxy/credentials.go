package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
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
		if tok, ok := bearer(v); ok {
			out = append(out, credential{where: inHeader, value: tok})
			continue
		}
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
		found := ""
		k, v, _ := strings.Cut(part, "=")
		// qsRoot: the query may be re-encoded from these decoded parts
		// (see sentQuery), which qs then names by their root.
		if key, err := url.QueryUnescape(k); err == nil && qsRoot(key) == "access_token" {
			val, err := url.QueryUnescape(v)
			bad := err != nil // Directus's parser then takes v as it is
			if bad {
				val = v
			}
			out = append(out, credential{where: inQuery, value: val, malformed: k != key || bad || key != "access_token"})
			found = val
		}
		// Directus's parser (qs) splits and names some parts otherwise:
		// what it reads as access_token and the above did not is never
		// swapped, so refused when it is the bridge's.
		if val, ok := qsAccessToken(part); ok && val != found {
			out = append(out, credential{where: inQuery, value: val, malformed: true})
		}
	}
	return out
}

// bearer returns TOKEN when v is exactly "Bearer TOKEN" (the scheme in any
// case, one space, no other white space): the well-formed header, found
// without splitting it into fields. Anything else, including white space
// beyond ASCII, is left to the slower reading in credentials.
func bearer(v string) (string, bool) {
	if len(v) < 8 || !strings.EqualFold(v[:6], "bearer") || v[6] != ' ' {
		return "", false
	}
	tok := v[7:]
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c >= utf8.RuneSelf || c <= ' ' {
			return "", false
		}
	}
	return tok, true
}

// qsAccessToken returns the value of part, one &-separated part of a query,
// when Directus's query parser (qs) files it under access_token: it reads
// %5B and %5D as brackets, splits at "]=" when there is one, decodes what
// it can, and names a key by its first bracketed segment when nothing
// precedes it ("[access_token]").
func qsAccessToken(part string) (string, bool) {
	part = strings.NewReplacer("%5B", "[", "%5b", "[", "%5D", "]", "%5d", "]").Replace(part)
	pos := strings.Index(part, "]=")
	if pos >= 0 {
		pos++
	} else {
		pos = strings.Index(part, "=")
	}
	key, val := part, ""
	if pos >= 0 {
		key, val = part[:pos], part[pos+1:]
	}
	if qsRoot(jsDecode(key)) != "access_token" {
		return "", false
	}
	return jsDecode(val), true
}

// qsRoot is the name qs files the decoded key under: what precedes its
// first "[", or, when nothing does, the first bracketed segment.
func qsRoot(key string) string {
	i := strings.IndexByte(key, '[')
	if i < 0 {
		return key
	}
	if j := strings.IndexByte(key[i+1:], ']'); i == 0 && j >= 0 && !strings.Contains(key[1:1+j], "[") {
		return key[1 : 1+j]
	}
	return key[:i]
}

// jsDecode decodes s as qs does: "+" is a space, then decodeURIComponent,
// and s (its "+" replaced) when that fails.
func jsDecode(s string) string {
	s = strings.ReplaceAll(s, "+", " ")
	d, err := url.PathUnescape(s)
	if err != nil || !utf8.ValidString(d) {
		return s
	}
	return d
}

// replace puts token in place of old, the value of c, in out: a copy of
// the request that carried c, or of one sent already with old in c's place.
// The place is found again by its value: net/http's reverse proxy drops
// query parameters it cannot parse before the request is rewritten.
func (c credential) replace(out *http.Request, old, token string) {
	switch c.where {
	case inHeader:
		for i, v := range out.Header["Authorization"] {
			tok, ok := bearer(v)
			if !ok { // a byte beyond ASCII: as credentials reads it
				if f := strings.Fields(v); len(f) == 2 && strings.EqualFold(f[0], "bearer") && v == f[0]+" "+f[1] {
					tok, ok = f[1], true
				}
			}
			if ok && tok == old {
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
