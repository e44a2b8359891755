package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestNestedUnique(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{}`, nil},
		{` { "a" : { "b" : [ 1 , { "c" : null } , "x\"y" ] } , "d" : true } `, nil},
		{`{"a":{"b":1,"b":2}}`, errRepeatedMember},
		{`{"a":[{"x":1},{"x":1}]}`, nil}, // different objects
		{`{"a":[{"x":1,"x":1}]}`, errRepeatedMember},
		{`{"a":{"n":1,"\u006e":2}}`, errRepeatedMember},
		{`{"a":{"\ud800":1,"\udfff":2}}`, errRepeatedMember}, // both U+FFFD
		{"{\"a\":{\"\xff\":1,\"\xfe\":2}}", errRepeatedMember},
		{`{"a":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k3":3}}`, errRepeatedMember},
		{`{"a":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17}}`, nil},
		{`{"a":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k15":16}}`, errRepeatedMember},
		{`{"a":{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k0":16}}`, errRepeatedMember},
	} {
		if got := nestedUnique([]byte(tc.in)); !errors.Is(got, tc.want) {
			t.Errorf("nestedUnique(%s) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzNestedUnique: for valid JSON, nestedUnique refuses exactly what
// repeats a member at some depth, as encoding/json reads names.
func FuzzNestedUnique(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":{"b":1,"b":2}}`, `{"a":[{"x":1,"\u0078":2}]}`, `{"a":[1,[2,{"c":{}}]]}`, `{"a":"\"}"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		got := nestedUnique(b)
		if got != nil && !errors.Is(got, errRepeatedMember) {
			t.Fatalf("valid JSON %q called malformed: %v", b, got)
		}
		if want := repeatsSomewhere(t, b); (got != nil) != want {
			t.Fatalf("nestedUnique(%q) = %v, reference says repeated=%v", b, got, want)
		}
	})
}

// repeatsSomewhere is the reference: a streaming decode tracking the names
// of every open object.
func repeatsSomewhere(t *testing.T, b []byte) bool {
	dec := json.NewDecoder(bytesReader(b))
	type frame struct {
		obj   bool
		names map[string]bool
		key   bool // the next token is a name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			name := tok.(string)
			if top.names[name] {
				return true
			}
			top.names[name] = true
			top.key = false
			continue
		}
		if top != nil && top.obj {
			top.key = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, names: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 && !dec.More() {
			return false
		}
	}
}

func BenchmarkDecodeClaims(b *testing.B) {
	payload := []byte(`{"iss":"https://kc.example/realms/r","sub":"8f2c-4b1a","aud":["directus","account"],"exp":1900000000,"iat":1800000000,` +
		`"azp":"directus-app","scope":"openid profile items:read items:write","realm_access":{"roles":["offline_access","uma_authorization","admin"]},` +
		`"resource_access":{"directus-app":{"roles":["editor","viewer"]},"account":{"roles":["manage-account"]}},"email_verified":true,"clientHost":"10.0.0.1"}`)
	b.Run("nestedUnique", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := nestedUnique(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decodeClaims", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeClaims(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
