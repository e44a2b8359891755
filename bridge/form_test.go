package bridge

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parseForm must be url.ParseQuery: the same values and an error exactly
// when ParseQuery has one.
func checkParseForm(t *testing.T, q string) {
	t.Helper()
	want, werr := url.ParseQuery(q)
	ps, gerr := parseForm(q, nil)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("parseForm(%q) error %v, url.ParseQuery %v", q, gerr, werr)
	}
	got := url.Values{}
	for _, p := range ps {
		got[p.key] = append(got[p.key], p.value)
	}
	if werr == nil {
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("parseForm(%q) (-url.ParseQuery +parseForm):\n%s", q, diff)
		}
	}
}

func TestParseFormIsParseQuery(t *testing.T) {
	for _, q := range []string{
		"", "&", "&&", "=", "a", "a=", "=b", "a=b", "a=b&a=c", "a=b;c", "a;b=c", "a=b&c;=d",
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=eyJ.eyJ.sig",
		"a+b=c+d", "a=%zz", "a=%4", "%=b", "a=%41%42", "a=b&&c=d", "a==b", "a=b=c", "\xff=\xfe", "a=%ff",
		strings.Repeat("a&", 9999) + "a", strings.Repeat("a&", 10000) + "a",
	} {
		checkParseForm(t, q)
	}
}

func FuzzParseForm(f *testing.F) {
	for _, s := range []string{"a=b&c=d", "a=%41+b", "a;b", "%zz=1", "subject_token=x.y.z&grant_type=g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) { checkParseForm(t, q) })
}

func TestParseFormURNs(t *testing.T) {
	for _, u := range []string{GrantTypeTokenExchange, TokenTypeAccessToken, TokenTypeJWT, "urn:ietf:params:oauth:other"} {
		checkParseForm(t, "k="+url.QueryEscape(u))
		checkParseForm(t, "k="+strings.ReplaceAll(url.QueryEscape(u), "%3A", "%3a"))
	}
}
