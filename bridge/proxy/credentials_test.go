package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header []string
		query  string
		want   []credential
	}{
		{name: "none", query: "fields=*&limit=1"},
		{name: "bearer", header: []string{"Bearer abc"}, want: []credential{{where: inHeader, value: "abc"}}},
		{name: "scheme in any case", header: []string{"bEaReR abc"}, want: []credential{{where: inHeader, value: "abc"}}},
		{name: "basic is not a token", header: []string{"Basic abc"}},
		{name: "bearer of three words", header: []string{"Bearer a b"},
			want: []credential{{where: inHeader, value: "a", malformed: true}, {where: inHeader, value: "b", malformed: true}}},
		{name: "bearer with two spaces", header: []string{"Bearer  abc"}, want: []credential{{where: inHeader, value: "abc", malformed: true}}},
		{name: "two headers", header: []string{"Bearer a", "Bearer b"},
			want: []credential{{where: inHeader, value: "a"}, {where: inHeader, value: "b"}}},
		{name: "query", query: "a=1&access_token=xyz&b=2", want: []credential{{where: inQuery, value: "xyz"}}},
		{name: "query key escaped", query: "%61ccess_token=xyz", want: []credential{{where: inQuery, value: "xyz", malformed: true}}},
		{name: "query value escaped", query: "access_token=x%2Ey", want: []credential{{where: inQuery, value: "x.y"}}},
		{name: "query array", query: "access_token[]=xyz", want: []credential{{where: inQuery, value: "xyz", malformed: true}}},
		{name: "query object", query: "access_token%5Ba%5D=xyz", want: []credential{{where: inQuery, value: "xyz", malformed: true}}},
		{name: "other key with the prefix", query: "access_tokens=xyz"},
		// Directus's query parser (qs) reads these as access_token too.
		{name: "bracketed name", query: "a=1&[access_token]=xyz", want: []credential{{where: inQuery, value: "xyz", malformed: true}}},
		{name: "bracketed name escaped", query: "%5Baccess_token%5D=xyz", want: []credential{{where: inQuery, value: "xyz", malformed: true}}},
		{name: "equals inside brackets", query: "access_token[x=a.b]=xyz",
			want: []credential{{where: inQuery, value: "a.b]=xyz", malformed: true}, {where: inQuery, value: "xyz", malformed: true}}},
		{name: "nested bracketed name", query: "a[access_token]=xyz"},
		{name: "header and query", header: []string{"Bearer a"}, query: "access_token=b",
			want: []credential{{where: inHeader, value: "a"}, {where: inQuery, value: "b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.header {
				h.Add("Authorization", v)
			}
			got := credentials(h, tc.query)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(credential{})); diff != "" {
				t.Errorf("credentials (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplaceKeepsTheRestOfTheQuery(t *testing.T) {
	u, _ := url.Parse("http://d/items/x?fields=%2A&access_token=idp-a.b.c&filter[id][_eq]=1&access_token=other")
	r := &http.Request{URL: u, Header: http.Header{}}
	credential{where: inQuery, value: "idp-a.b.c"}.replace(r, "idp-a.b.c", "dbr_T")
	if want := "fields=%2A&access_token=dbr_T&filter[id][_eq]=1&access_token=other"; r.URL.RawQuery != want {
		t.Errorf("query = %q, want %q", r.URL.RawQuery, want)
	}
	r.Header.Set("Authorization", "Bearer idp-a.b.c")
	credential{where: inHeader, value: "idp-a.b.c"}.replace(r, "idp-a.b.c", "dbr_T")
	if got := r.Header.Get("Authorization"); got != "Bearer dbr_T" {
		t.Errorf("Authorization = %q", got)
	}
}

func FuzzCredentials(f *testing.F) {
	f.Add("Bearer idp-a.b.c", "access_token=idp-a.b.c&x=1")
	f.Add("bearer  x y", "%61ccess_token[]=%zz&access_token=%41")
	f.Fuzz(func(t *testing.T, header, query string) {
		// The fast reading of a well-formed header agrees with fields.
		if tok, ok := bearer(header); ok {
			if f := strings.Fields(header); len(f) != 2 || !strings.EqualFold(f[0], "bearer") || f[1] != tok || header != f[0]+" "+f[1] {
				t.Fatalf("bearer(%q) = %q, but its fields are %q", header, tok, f)
			}
		}
		h := http.Header{"Authorization": {header}}
		for _, c := range credentials(h, query) {
			u := &url.URL{RawQuery: query}
			r := &http.Request{URL: u, Header: h.Clone()}
			c.replace(r, c.value, "dbr_T") // must not panic
			if c.malformed {
				continue
			}
			// A well-formed credential is found again in its place.
			again := credentials(r.Header, r.URL.RawQuery)
			found := false
			for _, a := range again {
				if a.where == c.where && a.value == "dbr_T" {
					found = true
				}
			}
			if !found {
				t.Fatalf("credential %+v not replaced: header %q query %q", c, r.Header.Get("Authorization"), r.URL.RawQuery)
			}
		}
	})
}

// A query re-encoded from its decoded parts (see sentQuery) is read by qs
// under each part's root: such a part is a credential already.
func TestCredentialsOfReencodedParts(t *testing.T) {
	got := credentials(http.Header{}, "%5Baccess_token%5Dq=a.b%5D%3Dxy")
	want := []credential{{where: inQuery, value: "a.b]=xy", malformed: true}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(credential{})); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
}
