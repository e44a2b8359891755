package bridge

import (
	"encoding/json"
	"testing"
)

// FuzzUniqueMembers checks the fast path against the tokenizer on valid JSON.
func FuzzUniqueMembers(f *testing.F) {
	for _, s := range []string{`{"sub":"a","sub":"b"}`, `{"EXP":1}`, `{"\u0073ub":1,"sub":2}`, `{"a":{"sub":1,"sub":2}}`,
		`{"ſub":"x"}`, `{"a":"}\"{","b":[1,{"c":2}],"a":3}`, `[1,2]`, `{}`, `{"iss":"x","aud":["a","b"],"exp":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		fast, slow := uniqueMembers(b, registeredClaims), uniqueMembersSlow(b, registeredClaims)
		if (fast == nil) != (slow == nil) {
			t.Fatalf("%s: fast %v, slow %v", b, fast, slow)
		}
	})
}

func BenchmarkUniqueMembers(b *testing.B) {
	payload := []byte(`{"jti":"fcDZz8nJ0jGxqG5O7q8w9","sub":"bridge-bench-ret-0@clients","iat":1763850000,"exp":1763853600,"scope":"items:read","iss":"http://127.0.0.1:45119/auth0/","aud":"https://directus-bridge.test/api","azp":"bridge-bench-ret-0","gty":"client-credentials"}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = uniqueMembers(payload, registeredClaims)
		}
	})
	b.Run("tokenizer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = uniqueMembersSlow(payload, registeredClaims)
		}
	})
}
