package proxy

import (
	"net/http"
	"strings"
	"testing"
)

// Directus's app server (express.static) answers a directory without its
// trailing slash with a 301 to the same URL, query included, and the URL
// in the body: the static token swapped into the query must not reach the
// client, who gets its own token back in its place.
func TestRedirectDoesNotLeakStaticToken(t *testing.T) {
	up := newUpstream(t)
	up.answer = func(w http.ResponseWriter, r *http.Request) bool {
		loc := r.URL.Path + "/?" + r.URL.RawQuery
		w.Header().Set("Location", loc)
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(http.StatusMovedPermanently)
		_, _ = w.Write([]byte("<p>Redirecting to " + loc + "</p>"))
		return true
	}
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", px.URL+"/admin/assets?access_token="+idpToken, nil)
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if got := up.requests(); len(got) != 1 || !strings.Contains(got[0].rawQuery, "dbr_") {
		t.Fatalf("upstream did not get the static token: %+v", got)
	}
	if loc := res.Header.Get("Location"); strings.Contains(loc, "dbr_") || loc != "/admin/assets/?access_token="+idpToken {
		t.Errorf("Location = %q, want the client's own token back", loc)
	}
	if strings.Contains(body.String(), "dbr_") {
		t.Errorf("body leaks the static token: %q", body.String())
	}
	for k, v := range res.Header {
		if strings.Contains(strings.Join(v, ","), "dbr_") {
			t.Errorf("header %s leaks the static token: %q", k, v)
		}
	}
}

// Directus's query parser takes [access_token]=T as access_token=T: an IdP
// token there is refused, not passed on unswapped (Directus would read it
// and log it, its log redacting only access_token=).
func TestQueryParserSpellingsRefused(t *testing.T) {
	up := newUpstream(t)
	ex := newFakeExchanger()
	_, px, _ := newTestProxy(t, up.srv.URL, ex, Options{})
	for _, q := range []string{"[access_token]=" + idpToken, "%5Baccess_token%5D=" + idpToken, "access_token[x=a.b]=" + idpToken} {
		res, _ := do(t, "GET", px.URL+"/items/x?"+q, nil, nil)
		if res.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", q, res.StatusCode)
		}
	}
	if got := up.requests(); len(got) != 0 {
		t.Errorf("Directus got %d requests, want none: %+v", len(got), got)
	}
}
