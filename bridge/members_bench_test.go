package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// hostileShape is a subject token an unauthenticated caller can send, as
// large as a request body allows, built to make the verifier work hard
// before (or without) a signature check.
type hostileShape struct {
	name  string
	token string
}

// maxSubjectToken is the longest subject_token a form body of at most
// MaxRequestBytes can carry.
func maxSubjectToken() int { return MaxRequestBytes - len(benchForm("")) }

// memberName returns the i-th of a sequence of distinct short member names
// (printable ASCII without quote and backslash, shortest first). None
// spells a registered name: 93 of one character come first, then two.
func memberName(i int) string {
	const alphabet = " !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"
	n := len(alphabet)
	if i < n {
		return alphabet[i : i+1]
	}
	i -= n
	return string([]byte{alphabet[i/n%n], alphabet[i%n]})
}

// foldName returns the i-th distinct name of runes that all fold to ASCII
// letters (s, S, ſ, k, K, K): they keep the case-variant check busy
// without spelling a registered name.
func foldName(i int) string {
	runes := []rune{'s', 'S', '\u017f', 'k', 'K', '\u212a'}
	var b strings.Builder
	for range 5 {
		b.WriteRune(runes[i%len(runes)])
		i /= len(runes)
	}
	return b.String()
}

// shapeIssuer is what hostile tokens claim to come from: a trusted issuer,
// so that they go on to the signature check.
type shapeIssuer struct {
	iss, aud, kid string
	alg           jose.SignatureAlgorithm
	sigLen        int       // of the (made-up) signature, in bytes
	exp           time.Time // the tokens' exp
	limit         int       // of a token's length
}

// hostileShapes returns the hostile tokens: header and payload of si filled
// up to si.limit, and a signature of the right length that does not
// verify.
func hostileShapes(tb testing.TB, si shapeIssuer) []hostileShape {
	tb.Helper()
	header := fmt.Sprintf(`{"alg":%q,"kid":%q,"typ":"at+jwt"`, si.alg, si.kid)
	claims := fmt.Sprintf(`{"iss":%q,"sub":"svc-hostile@clients","aud":%q,"exp":%d,"gty":"client-credentials"`,
		si.iss, si.aud, si.exp.Unix())
	iss := si.iss
	sig := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\x01", si.sigLen)))
	b64 := func(n int) int { return (4*n + 2) / 3 }
	// fill appends members to obj (an object without its closing brace)
	// while the token stays within the limit; other is the other segment's
	// length in base64url.
	fill := func(obj string, other int, member func(i int) string) string {
		budget := (si.limit - other - len(sig) - 2) * 3 / 4
		var b strings.Builder
		b.WriteString(obj)
		for i := 0; ; i++ {
			m := "," + member(i)
			if b.Len()+len(m)+1 > budget {
				break
			}
			b.WriteString(m)
		}
		b.WriteByte('}')
		return b.String()
	}
	tiny := func(i int) string { return fmt.Sprintf("%q:0", memberName(i)) }
	escaped := func(i int) string { return `"\t` + memberName(i) + `":0` }
	oneEscape := func(i int) string {
		if i == 0 {
			return `"\u00e9":0`
		}
		return tiny(i)
	}
	long := func(i int) string { return fmt.Sprintf(`"%s%03d":0`, strings.Repeat("n", 61), i) }
	fold := func(i int) string { return fmt.Sprintf("%q:0", foldName(i)) }
	hdr := header + "}"
	payload := claims + "}"
	shape := func(name, h, p string) hostileShape {
		tok := forgeB64(h) + "." + forgeB64(p) + "." + sig
		if len(tok) > si.limit {
			tb.Fatalf("shape %s: %d bytes, over %d", name, len(tok), si.limit)
		}
		return hostileShape{name, tok}
	}
	inPayload := func(name string, member func(int) string) hostileShape {
		return shape(name, hdr, fill(claims, b64(len(hdr)), member))
	}
	inHeader := func(name string, member func(int) string) hostileShape {
		return shape(name, fill(header, b64(len(payload)), member), payload)
	}
	nested := func(open, close string) string {
		budget := (si.limit-b64(len(hdr))-len(sig)-2)*3/4 - len(claims) - len(`,"n":}`)
		depth := budget / (len(open) + len(close))
		return claims + `,"n":` + strings.Repeat(open, depth) + strings.Repeat(close, depth) + "}"
	}
	wide := func() string {
		inner := fill(`{"a":0`, b64(len(hdr))+b64(len(claims)+8), tiny)
		return claims + `,"n":` + inner + "}"
	}
	untrusted := strings.Replace(claims, fmt.Sprintf("%q", iss), `"https://untrusted.example/"`, 1)
	// The largest header the bridge accepts: maxHeaderMembers members in
	// maxHeaderBytes, which go-jose parses again, in front of a payload of
	// tiny members.
	var big strings.Builder
	big.WriteString(header)
	for i := 3; i < maxHeaderMembers; i++ {
		n := (maxHeaderBytes-len(header)-1)/(maxHeaderMembers-3) - len(`,"x00":""`)
		fmt.Fprintf(&big, `,"x%02d":%q`, i, strings.Repeat("v", n))
	}
	big.WriteString("}")
	if big.Len() > maxHeaderBytes {
		tb.Fatalf("largest header: %d bytes", big.Len())
	}
	longValue := fill(header+`,"x":"`+strings.Repeat("v", si.limit/2)+`"`, b64(len(payload)), tiny)
	return []hostileShape{
		inPayload("payload/tiny-members", tiny),
		shape("payload/tiny-members-untrusted-iss", hdr, fill(untrusted, b64(len(hdr)), tiny)),
		inPayload("payload/one-escaped-name", oneEscape),
		inPayload("payload/escaped-names", escaped),
		inPayload("payload/long-names", long),
		inPayload("payload/case-fold-variants", fold),
		shape("payload/nested-members", hdr, wide()),
		shape("payload/deep-nesting", hdr, nested("[", "]")),
		inHeader("header/tiny-members", tiny),
		inHeader("header/escaped-names", escaped),
		inHeader("header/case-fold-variants", fold),
		shape("header/long-value", longValue, payload),
		shape("header+payload/largest-header-tiny-members", big.String(), fill(claims, b64(big.Len()), tiny)),
	}
}

// BenchmarkHostileToken measures the verification of the worst subject
// tokens an unauthenticated caller can send (64 KiB bodies of many tiny,
// long, escaped, case-folding or nested members) next to an ordinary
// token's verification in the same run. x-ordinary is a shape's cost in
// ordinary verifications: the work per request must stay linear in its
// size, a few ordinary verifications at most.
//
//	go test ./bridge -run '^$' -bench '^BenchmarkHostileToken$'
func BenchmarkHostileToken(b *testing.B) {
	bb := newBenchBridge(b, func(o *Options) { o.VerifiedCacheSize = -1 })
	bi := bb.issuers[jose.RS256]
	v := bb.ex.verifier
	ctx := context.Background()
	ordinary := bi.token(b, "svc-ordinary@clients", "items:read items:write")
	if _, err := v.Verify(ctx, ordinary); err != nil { // discovery and JWKS
		b.Fatal(err)
	}
	var base float64 // ns per ordinary verification
	b.Run("ordinary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, ordinary); err != nil {
				b.Fatal(err)
			}
		}
		base = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(1, "x-ordinary")
	})
	// floor is what any verifier pays for a token of the largest size:
	// hash it once and base64-decode it once.
	b.Run("floor/sha256+base64-decode", func(b *testing.B) {
		tok := strings.Repeat("A", maxSubjectToken()/4*4)
		b.SetBytes(int64(len(tok)))
		for b.Loop() {
			_ = sha256.Sum256([]byte(tok))
			if _, err := base64.RawURLEncoding.DecodeString(tok); err != nil {
				b.Fatal(err)
			}
		}
		if base > 0 {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-ordinary")
		}
	})
	for _, s := range hostileShapes(b, shapeIssuer{iss: bi.url, aud: benchAudience, kid: "bench-RS256", alg: jose.RS256,
		sigLen: 256, exp: time.Now().Add(time.Hour), limit: maxSubjectToken()}) {
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(len(s.token)))
			b.ReportAllocs()
			for b.Loop() {
				var te *TokenError
				if _, err := v.Verify(ctx, s.token); !errors.As(err, &te) {
					b.Fatalf("want a refusal, got %v", err)
				}
			}
			if base > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-ordinary")
			}
		})
	}
}
