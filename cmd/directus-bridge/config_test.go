package main

import (
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
