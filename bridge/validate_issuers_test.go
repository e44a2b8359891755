package bridge

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ValidateIssuers' problems say which issuer (0-based index) and which of
// its keys they are about, so that a configuration check can point at the
// line; their messages are unchanged.
func TestValidateIssuersNameIndexAndField(t *testing.T) {
	ok := func(name, iss string) IssuerConfig {
		return IssuerConfig{Name: name, Issuer: iss, Audiences: []string{"a"}, UserIDs: UserIDsIssuer}
	}
	bad := ok("b", "not-a-url")
	bad.Algorithms = []string{"HS256"}
	bad.Audiences = nil
	bad.Leeway = Duration(-1)
	dup := ok("b", "https://a/")
	dup.UserIDs = "uuid"
	hook1, hook2 := ok("h1", "https://h1/"), ok("h2", "https://h2/")
	hook1.UserIDs, hook2.UserIDs = "", UserIDsHook
	errs := ValidateIssuers([]IssuerConfig{ok("a", "https://a/"), bad, dup, hook1, hook2})
	type got struct {
		Index       int
		Field, Name string
		With        int
	}
	var gots []got
	for _, err := range errs {
		var ie *IssuerError
		if !errors.As(err, &ie) {
			t.Fatalf("%v (%T) is not an *IssuerError", err, err)
		}
		if ie.Reason == "" {
			t.Errorf("%v: no reason", err)
		}
		gots = append(gots, got{ie.Index, ie.Field, ie.Name, ie.With})
	}
	want := []got{
		{1, "issuer", "b", -1},
		{1, "audiences", "b", -1},
		{1, "algorithms", "b", -1},
		{1, "leeway", "b", -1},
		{2, "user_ids", "b", -1},
		{2, "name", "b", 1},
		{2, "issuer", "b", 0},
		{4, "user_ids", "h2", 3},
	}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	for i, msg := range map[int]string{
		0: `issuer "b": issuer must be an http(s) URL, got "not-a-url"`,
		5: `issuer "b": the name is used twice`,
		7: "issuers h1, h2 all use hook user ids",
	} {
		if got := errs[i].Error(); len(got) < len(msg) || got[:len(msg)] != msg {
			t.Errorf("errs[%d] = %q, want it to start with %q", i, got, msg)
		}
	}
}
