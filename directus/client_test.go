package directus

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// recorder is a Directus stand-in that answers every request with one
// status and body and keeps the last request.
type recorder struct {
	method, path string
	query        map[string]string
	body         string
}

func serve(t *testing.T, status int, body string) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.method, rec.path, rec.query = r.Method, r.URL.Path, map[string]string{}
		for k, v := range r.URL.Query() {
			rec.query[k] = strings.Join(v, ",")
		}
		b, _ := io.ReadAll(r.Body)
		rec.body = string(b)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "admin-token", Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

// A base URL holding credentials is refused, and the error never shows them.
func TestNewRefusesCredentialsInURL(t *testing.T) {
	for _, u := range []string{"https://admin:s3cret-pw@directus.example.com", "https://s3cret-pw@directus.example.com/", "ftp://admin:s3cret-pw@x"} {
		_, err := New(u, "", Options{})
		if err == nil {
			t.Fatalf("New(%q) accepted credentials in the URL", u)
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Fatalf("the error shows the credentials: %v", err)
		}
	}
}
