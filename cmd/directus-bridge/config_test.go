package main

import (
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// yamlKeys lists the dotted YAML keys of a struct type, recursively.
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" || f.Tag.Get("deprecated") != "" {
			continue
		}
		key := prefix + name
		keys = append(keys, key)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
			keys = append(keys, yamlKeys(ft, key+".")...)
		}
	}
	return keys
}

func TestExampleConfigIsValidAndComplete(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	c, err := LoadConfig("../../testdata/directus-bridge.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("example config: %v", err)
	}
	// Every key of the Config struct appears in the example file and in the
	// configuration reference in docs/configuration.md, so neither can drift.
	raw, _ := os.ReadFile("../../testdata/directus-bridge.example.yaml")
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	var walk func(v any, prefix string)
	walk = func(v any, prefix string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				present[prefix+k] = true
				walk(e, prefix+k+".")
			}
		case []any:
			for _, e := range v {
				walk(e, prefix)
			}
		}
	}
	walk(doc, "")
	readme, _ := os.ReadFile("../../docs/configuration.md")
	for _, k := range yamlKeys(reflect.TypeOf(Config{}), "") {
		if !present[k] {
			t.Errorf("example config lacks %s", k)
		}
		if !strings.Contains(string(readme), "`"+k+"`") {
			t.Errorf("docs/configuration.md lacks `%s`", k)
		}
	}
}

func TestValidateReportsEverything(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "")
	c, err := ParseConfig([]byte(`
listen: nowhere
directus: {url: ftp://x}
tokens: {ttl: 10m, rotate_before: 20m}
issuers:
  - {name: a, issuer: not-a-url, algorithms: [HS256, none]}
  - {name: a, issuer: not-a-url}
rules:
  - {issuer: ghost, role: R}
  - {all_scopes: [x]}
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken config")
	}
	for _, want := range []string{"listen", "directus.url", "DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "state.path",
		"rotate_before", `"HS256" is not allowed`, `"none" is not allowed`, "audience", `"a": the name is used twice`,
		`issuer "ghost"`, "needs a role"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestUnknownKeysAreErrors(t *testing.T) {
	_, err := ParseConfig([]byte("listen: 127.0.0.1:1\ntokens: {ttl: 1m, tll: 2m}\n"))
	if err == nil || !strings.Contains(err.Error(), "tll") {
		t.Fatalf("unknown key: got %v", err)
	}
}

func TestUserIDMatchesNpmUUID(t *testing.T) {
	// Computed with npm uuid (the package the hook extension uses):
	// require("uuid").v5(client, require("uuid").NIL).
	for client, want := range map[string]string{
		"abc@clients":              "8ddcf8ea-0abc-5072-9a26-be43d6fdac3d",
		"svc-a@clients":            "eee254ed-d297-5513-8c1a-479deaea4f54",
		"6GoXNEhrefvB5U1I@clients": "70cf0262-991c-5407-891c-6089237cc87c",
	} {
		var out, errOut strings.Builder
		if code := run([]string{"user-id", client}, &out, &errOut); code != 0 {
			t.Fatalf("user-id: exit %d: %s", code, errOut.String())
		}
		if got := strings.TrimSpace(out.String()); got != want {
			t.Errorf("user-id %s = %s, want %s", client, got, want)
		}
	}
}

// Credentials in directus.url are a problem, and the problem does not show them.
func TestDirectusURLWithCredentials(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	_, ps := checkConfig([]byte("directus: {url: 'https://admin:s3cret-pw@directus.example.com'}\n"))
	for _, u := range []string{"https://s3cret-pw@directus.example.com"} {
		_, more := checkConfig([]byte("directus: {url: '" + u + "'}\n"))
		ps = append(ps, more...)
	}
	found := false
	for _, p := range ps {
		if strings.Contains(p.Error(), "s3cret-pw") {
			t.Fatalf("a problem shows the credentials: %v", p)
		}
		if p.Path == "directus.url" {
			found = true
		}
	}
	if !found {
		t.Fatalf("credentials in directus.url are not a problem: %v", ps)
	}
}

func TestStateDriver(t *testing.T) {
	for _, tc := range []struct {
		name, state string
		env         map[string]string
		want        []string // "path: words" of each state problem, in order
		keyFile     string   // state.key_file after the defaults
	}{
		{name: "bbolt by default", state: `{path: /var/lib/b/state.db}`, keyFile: "/var/lib/b/state.db.key"},
		{name: "bbolt needs a path", state: `{driver: bbolt}`, want: []string{"state.path: required"}},
		{
			name: "postgres", state: `{driver: postgres}`,
			env: map[string]string{"DIRECTUS_BRIDGE_STATE_DSN": "postgres://u:p@db/b", "DIRECTUS_BRIDGE_STATE_KEY": "k"},
		},
		{
			name: "postgres with another variable and a key file", state: `{driver: postgres, dsn_env: MY_DSN, key_file: /etc/b/key}`,
			env: map[string]string{"MY_DSN": "postgres://u:p@db/b"}, keyFile: "/etc/b/key",
		},
		{
			name: "postgres needs the DSN and a key", state: `{driver: postgres}`,
			want: []string{"state.dsn_env: DIRECTUS_BRIDGE_STATE_DSN is not set", "state.key_env: DIRECTUS_BRIDGE_STATE_KEY is not set and state.key_file is not given"},
		},
		{
			name: "postgres needs a DSN that parses", state: `{driver: postgres}`,
			env:  map[string]string{"DIRECTUS_BRIDGE_STATE_DSN": "postgres://u:pw-in-a-bad-dsn@db:notaport/b", "DIRECTUS_BRIDGE_STATE_KEY": "k"},
			want: []string{"state.dsn_env: DIRECTUS_BRIDGE_STATE_DSN does not hold a PostgreSQL DSN"},
		},
		{
			name: "postgres has no path", state: `{driver: postgres, path: /var/lib/b/state.db}`,
			env:  map[string]string{"DIRECTUS_BRIDGE_STATE_DSN": "host=db dbname=b", "DIRECTUS_BRIDGE_STATE_KEY": "k"},
			want: []string{"state.path: is for state.driver bbolt"},
		},
		{name: "unknown driver", state: `{driver: sqlite, path: /x}`, want: []string{`state.driver: want bbolt or postgres, got "sqlite"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"DIRECTUS_BRIDGE_STATE_DSN", "DIRECTUS_BRIDGE_STATE_KEY", "MY_DSN"} {
				t.Setenv(k, tc.env[k])
			}
			c, err := ParseConfig([]byte("state: " + tc.state + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			var got []Problem
			for _, p := range c.problems() {
				if strings.HasPrefix(p.Path, "state") {
					got = append(got, p)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("state problems %v, want %v", got, tc.want)
			}
			for i, w := range tc.want {
				path, words, _ := strings.Cut(w, ": ")
				if got[i].Path != path || !strings.Contains(got[i].Msg, words) {
					t.Errorf("problem %d = %s: %s, want %s: ...%s...", i, got[i].Path, got[i].Msg, path, words)
				}
			}
			for _, p := range got {
				if strings.Contains(p.Msg, "pw-in-a-bad-dsn") {
					t.Errorf("the DSN's password is in %s: %s", p.Path, p.Msg)
				}
			}
			if c.State.KeyFile != tc.keyFile {
				t.Errorf("key_file %q, want %q", c.State.KeyFile, tc.keyFile)
			}
		})
	}
}

func TestStateDSNNeverInTheConfigFile(t *testing.T) {
	if _, err := ParseConfig([]byte("state: {driver: postgres, dsn: postgres://u:p@db/b}\n")); err == nil || !strings.Contains(err.Error(), "dsn") {
		t.Fatalf("a DSN in the file: %v, want an unknown key", err)
	}
}

func TestPostgresStateOpenErrorHidesThePassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const pw = "pw-Zr81-secret"
	t.Setenv("DIRECTUS_BRIDGE_STATE_DSN", "postgres://bridge:"+pw+"@"+addr+"/bridge?sslmode=disable")
	t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", base64.StdEncoding.EncodeToString(make([]byte, 32)))
	c, err := ParseConfig([]byte("state: {driver: postgres}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = newExchanger(t.Context(), c, slog.New(slog.DiscardHandler), nil, false)
	if err == nil {
		t.Fatal("opened a state on a closed port")
	}
	if strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "DIRECTUS_BRIDGE_STATE_DSN") || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("error %q: want the variable's name and the cause, never the password", err)
	}
}

func TestProxyConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // "path: words" of each proxy problem, in order
	}{
		{name: "off by default", yaml: "{}"},
		{name: "on", yaml: "{listen: 127.0.0.1:8055}"},
		{name: "not host:port", yaml: "{listen: nowhere}", want: []string{`proxy.listen: "nowhere" is not host:port`}},
		{name: "the exchange listener", yaml: "{listen: 127.0.0.1:8080}", want: []string{"proxy.listen: must differ from listen"}},
		{name: "upstream with credentials", yaml: "{listen: 127.0.0.1:8055, upstream: 'http://u:s3cret-pw@d:8055'}",
			want: []string{"proxy.upstream: want an http(s) URL"}},
		{name: "upstream with a query", yaml: "{listen: 127.0.0.1:8055, upstream: 'http://d:8055/?a=1'}", want: []string{"proxy.upstream: want an http(s) URL"}},
		{name: "limits", yaml: "{max_connections: -1, max_websockets: 2000000, queue_timeout: 2h, response_timeout: -1s}",
			want: []string{"proxy.max_connections: want 1 to 100000", "proxy.max_websockets: want 1 to 1000000",
				"proxy.queue_timeout: want 0 to 1h", "proxy.response_timeout: want 0 to 1h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte("listen: 127.0.0.1:8080\ndirectus: {url: 'http://127.0.0.1:8055'}\nproxy: " + tc.yaml + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			var got []Problem
			for _, p := range c.problems() {
				if strings.HasPrefix(p.Path, "proxy") {
					got = append(got, p)
				}
				if strings.Contains(p.Error(), "s3cret-pw") {
					t.Errorf("a problem shows the credentials: %v", p)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("problems %v, want %v", got, tc.want)
			}
			for i, p := range got {
				if s := p.Path + ": " + p.Msg; !strings.HasPrefix(s, tc.want[i]) {
					t.Errorf("problem %d = %q, want %q...", i, s, tc.want[i])
				}
			}
			if tc.name == "on" && c.Proxy.Upstream != "http://127.0.0.1:8055" {
				t.Errorf("upstream defaults to %q, want directus.url", c.Proxy.Upstream)
			}
		})
	}
}

// TestDocsProxyConfig: the hook migration written as a proxy-mode
// configuration in docs/proxy.md is a valid configuration as it stands.
func TestDocsProxyConfig(t *testing.T) {
	b, err := os.ReadFile("../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\n")
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatal("docs/proxy.md has no yaml block")
	}
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "a-token-from-the-environment")
	c, err := ParseConfig([]byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the configuration in docs/proxy.md is invalid:\n%v", err)
	}
	if c.Proxy.Listen == "" || len(c.Issuers) != 1 || c.Issuers[0].UserIDs != "hook" || len(c.Rules) != 1 {
		t.Errorf("the documented configuration is not the hook's setup in proxy mode: %+v", c)
	}
}
