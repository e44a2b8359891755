package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzUniqueMembers checks uniqueMembers against an independent reading
// with encoding/json's tokenizer on valid JSON: the same member names, and
// a refusal exactly when the tokenizer's names repeat or spell a
// registered name in another case. The hostile shapes of
// BenchmarkHostileToken are in its corpus.
func FuzzUniqueMembers(f *testing.F) {
	for _, s := range []string{`{"sub":"a","sub":"b"}`, `{"EXP":1}`, `{"\u0073ub":1,"sub":2}`, `{"a":{"sub":1,"sub":2}}`,
		`{"ſub":"x"}`, `{"a":"}\"{","b":[1,{"c":2}],"a":3}`, `[1,2]`, `{}`, `{"iss":"x","aud":["a","b"],"exp":1}`,
		`[1,"a","a"]`, `{"\ud800":1,"\ufffd":2}`, `{"\ud83d\ude00":1,"😀":2}`, `{"\ud800\u0041":1,"�A":2}`, `{"KID":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			_ = uniqueMembers(b, registeredClaims) // must not panic
			return
		}
		want, values, oracle := tokenizerMembers(b, registeredClaims)
		var o jsonObject
		scanErr := o.scan(b)
		if scanErr != nil && (want != nil || !errors.Is(scanErr, errNotObject)) {
			t.Fatalf("%q: scan: %v", b, scanErr)
		}
		var got []string
		for i := range o.members {
			got = append(got, string(o.name(i)))
			var v any
			if err := json.Unmarshal(o.value(i), &v); err != nil {
				t.Fatalf("%q: the value of %q, %q, is not JSON: %v", b, o.name(i), o.value(i), err)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q: names %q, the tokenizer reads %q", b, got, want)
		}
		if fast := uniqueMembers(b, registeredClaims); (fast == nil) != (oracle == nil) {
			t.Fatalf("%q: uniqueMembers %v, tokenizer %v", b, fast, oracle)
		}
		// unverifiedIssuer reads the one iss as encoding/json reads it.
		iss, err := unverifiedIssuer(b)
		var wantIss string
		var wantErr bool
		switch n := strings.Count("\x00"+strings.Join(want, "\x00")+"\x00", "\x00iss\x00"); {
		case n > 1:
			wantErr = true
		case n == 1:
			wantErr = json.Unmarshal(values[slices.Index(want, "iss")], &wantIss) != nil
		case errors.Is(scanErr, errNotObject) && string(bytes.TrimSpace(b)) != "null":
			wantErr = true // not an object
		}
		if (err != nil) != wantErr || err == nil && iss != wantIss {
			t.Fatalf("%q: unverifiedIssuer %q, %v; want %q (error %v)", b, iss, err, wantIss, wantErr)
		}
	})
}

// uniqueMembers is what readHeader and verifiedClaims check of the object
// b; a b that is not an object passes (its decoder refuses it).
func uniqueMembers(b []byte, registered []string) error {
	var o jsonObject
	switch err := o.scan(b); {
	case errors.Is(err, errNotObject):
		return nil
	case err != nil:
		return err
	}
	return o.unique(registered)
}

// TestHostileShapeSeeds keeps the hostile shapes of BenchmarkHostileToken
// in the corpora: of FuzzVerify as tokens of a fuzz issuer, 4 KiB each (the
// shapes, not their size, are what the fuzzer needs: 64 KiB inputs would
// slow it down), and of FuzzUniqueMembers their headers and payloads. With
// -update-fuzz-seeds it writes them.
func TestHostileShapeSeeds(t *testing.T) {
	shapes := hostileShapes(t, shapeIssuer{iss: "https://eddsa.fuzz.test/", aud: fuzzAudience, kid: "fz-ed", alg: jose.EdDSA,
		sigLen: 64, exp: fuzzNow.Add(time.Hour), limit: 4 << 10})
	files, seen := map[string]string{}, map[string]bool{}
	for _, s := range shapes {
		name := "hostile-" + strings.ReplaceAll(s.name, "/", "-")
		files[filepath.Join("testdata", "fuzz", "FuzzVerify", name)] = "go test fuzz v1\nstring(" + strconv.Quote(s.token) + ")\n"
		parts := strings.Split(s.token, ".")
		for i, part := range []string{"header", "payload"} {
			b, err := base64.RawURLEncoding.DecodeString(parts[i])
			if err != nil {
				t.Fatal(err)
			}
			if !seen[string(b)] {
				seen[string(b)] = true
				files[filepath.Join("testdata", "fuzz", "FuzzUniqueMembers", name+"-"+part)] = "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			}
		}
	}
	for path, want := range files {
		if *updateFuzzSeeds {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != want {
			t.Errorf("%s is missing or stale (%v): run go test -run '^TestHostileShapeSeeds$' -update-fuzz-seeds", path, err)
		}
	}
}

// tokenizerMembers reads the members of a JSON object with encoding/json's
// tokenizer and applies the rules of uniqueMembers to the names with a map
// and strings.EqualFold: the reference uniqueMembers must agree with (it
// was the bridge's slow path).
func tokenizerMembers(b []byte, registered []string) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, nil // not an object: json.Unmarshal reports it
	}
	var names []string
	var values []json.RawMessage
	var refused error
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return names, values, err
		}
		name, ok := t.(string)
		if !ok {
			return names, values, errors.New("malformed object")
		}
		names = append(names, name)
		if seen[name] && refused == nil {
			refused = fmt.Errorf("member %q is repeated", name)
		}
		seen[name] = true
		for _, r := range registered {
			if name != r && strings.EqualFold(name, r) && refused == nil {
				refused = fmt.Errorf("member %q is not %q", name, r)
			}
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return names, values, err
		}
		values = append(values, value)
	}
	return names, values, refused
}

// TestFoldASCII checks the premise of foldASCII over all of Unicode: the
// only runes outside ASCII that case-fold to an ASCII letter are ſ and K,
// and the registered names are lower-case ASCII.
func TestFoldASCII(t *testing.T) {
	for r := rune(utf8.RuneSelf); r <= unicode.MaxRune; r++ {
		if r == 'ſ' || r == '\u212a' || !utf8.ValidRune(r) {
			continue
		}
		// The runes strings.EqualFold takes for r are its SimpleFold orbit.
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < utf8.RuneSelf {
				t.Errorf("%U folds to %q: foldASCII must know it", r, f)
			}
		}
	}
	for _, r := range slices.Concat(registeredHeader, registeredClaims) {
		if strings.ToLower(r) != r || len(r) > maxRegisteredLen || strings.ContainsFunc(r, func(c rune) bool { return c >= utf8.RuneSelf }) {
			t.Errorf("registered name %q is not lower-case ASCII of at most %d bytes", r, maxRegisteredLen)
		}
	}
	for _, tc := range []struct {
		name string
		want string // "" = no ASCII folding
	}{{"EXP", "exp"}, {"ſub", "sub"}, {"\u212aid", "kid"}, {"_Claim_Names", "_claim_names"}, {"é", ""},
		{strings.Repeat("a", maxRegisteredLen+1), ""}} {
		var buf [maxRegisteredLen]byte
		got, ok := foldASCII(buf[:0], []byte(tc.name))
		if !ok {
			got = nil
		}
		if string(got) != tc.want {
			t.Errorf("foldASCII(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// BenchmarkUniqueMembersScaling checks the duplicate-member check of 900
// and of 7,200 members (8x) in the same run and reports the cost ratio: about
// 8 for linear work (it was about 85 when the check was quadratic).
func BenchmarkUniqueMembersScaling(b *testing.B) {
	object := func(n int) []byte {
		var sb strings.Builder
		sb.WriteString(`{"iss":"x"`)
		for i := range n {
			fmt.Fprintf(&sb, ",%q:0", memberName(i))
		}
		sb.WriteString("}")
		return []byte(sb.String())
	}
	small, large := object(900), object(7200)
	var ts, tl time.Duration
	for b.Loop() {
		start := time.Now()
		if err := uniqueMembers(small, registeredClaims); err != nil {
			b.Fatal(err)
		}
		ts += time.Since(start)
		start = time.Now()
		if err := uniqueMembers(large, registeredClaims); err != nil {
			b.Fatal(err)
		}
		tl += time.Since(start)
	}
	b.ReportMetric(float64(tl)/float64(ts), "cost-ratio-8x")
}

func BenchmarkUniqueMembers(b *testing.B) {
	payload := []byte(`{"jti":"fcDZz8nJ0jGxqG5O7q8w9","sub":"bridge-bench-ret-0@clients","iat":1763850000,"exp":1763853600,"scope":"items:read","iss":"http://127.0.0.1:45119/auth0/","aud":"https://directus-bridge.test/api","azp":"bridge-bench-ret-0","gty":"client-credentials"}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = uniqueMembers(payload, registeredClaims)
		}
	})
	b.Run("tokenizer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _, _ = tokenizerMembers(payload, registeredClaims)
		}
	})
}
