package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validBase is a minimal valid configuration; cases change it by line.
const validBase = `directus:
  url: http://127.0.0.1:8055
state:
  path: /tmp/state.db
issuers:
  - name: idp
    issuer: https://idp.example/
    audiences: [directus]
rules:
  - client: svc-a
    role: Viewer
`

// problemWant is one problem a broken file must produce: its exact path and
// line, and words its message must contain.
type problemWant struct {
	path  string
	line  int
	words []string
}

func TestConfigCheckPointsAtEachProblem(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		name string
		file string
		want []problemWant
	}{
		{"unknown key with a suggestion", strings.Replace(validBase, "  url:", "  tokn_env: X\n  url:", 1),
			[]problemWant{{"directus.tokn_env", 2, []string{"unknown key", "did you mean token_env?", "url, token_env, timeout, retries"}}}},
		{"unknown top-level key", validBase + "rule: []\n",
			[]problemWant{{"rule", 12, []string{"unknown key", "did you mean rules?"}}}},
		{"unknown key without a near one", validBase + "zzzzzzzz: 1\n",
			[]problemWant{{"zzzzzzzz", 12, []string{"unknown key", "allowed here: listen, tls"}}}},
		{"unknown key in a list element", validBase + "  - rol: Editor\n",
			[]problemWant{{"rules[2].rol", 12, []string{"unknown key", "did you mean role?"}}, {"rules[2].role", 12, []string{"needs a role"}}}},
		{"duration", strings.Replace(validBase, "  url:", "  timeout: ten\n  url:", 1),
			[]problemWant{{"directus.timeout", 2, []string{"want a duration such as 10s or 1m30s", `got "ten"`}}}},
		{"integer", strings.Replace(validBase, "  url:", "  retries: x\n  url:", 1),
			[]problemWant{{"directus.retries", 2, []string{"want an integer", `got "x"`}}}},
		{"long value is capped", strings.Replace(validBase, "  url:", "  retries: "+long+"\n  url:", 1),
			[]problemWant{{"directus.retries", 2, []string{"want an integer", `got "aaaaaaaaaa`, `…"`}}}},
		{"boolean", validBase + "    deny: maybe\n",
			[]problemWant{{"rules[1].deny", 12, []string{"want true or false", `got "maybe"`}}}},
		{"a list where a map is wanted", strings.Replace(validBase, "directus:\n  url: http://127.0.0.1:8055", "directus: [a]", 1),
			[]problemWant{{"directus", 1, []string{"want a map", "got a list"}}}}, // directus.url is not repeated
		{"a scalar where a list is wanted", strings.Replace(validBase, "[directus]", "directus", 1),
			[]problemWant{{"issuers[1].audiences", 8, []string{"want a list", `got "directus"`, "[a, b]"}}}},
		{"a list where a string is wanted", strings.Replace(validBase, "role: Viewer", "role: [a, b]", 1),
			[]problemWant{{"rules[1].role", 11, []string{"want a string", "got a list"}}}},
		{"a map where a list is wanted", strings.Replace(validBase, "rules:\n  - client: svc-a\n    role: Viewer", "rules: {role: Viewer}", 1),
			[]problemWant{{"rules", 9, []string{"want a list", "got a map"}}}},
		{"required_claims not a map", strings.Replace(validBase, "rules:", "  - {name: b, issuer: https://b/, audiences: [x], user_ids: issuer, required_claims: [gty]}\nrules:", 1),
			[]problemWant{{"issuers[2].required_claims", 9, []string{"want a map", "got a list"}}}},
		{"list element of the wrong type", strings.Replace(validBase, "[directus]", "[directus, {a: b}]", 1),
			[]problemWant{{"issuers[1].audiences[2]", 8, []string{"want a string", "got a map"}}}},
		{"a bad list element keeps the numbers of the others", validBase + "  - oops\n  - ~\n  - {issuer: ghost, role: R}\n",
			[]problemWant{{"rules[2]", 12, []string{"want a map", `got "oops"`}}, {"rules[3]", 13, []string{"empty list element"}},
				{"rules[4].issuer", 14, []string{`"ghost"`}}}},
		{"a bad issuer shows no problem between issuers", strings.Replace(validBase, "issuers:\n", "issuers:\n  - oops\n", 1),
			[]problemWant{{"issuers[1]", 6, []string{"want a map", `got "oops"`}}}},
		{"a rule that lost a condition shadows nothing", validBase + "    claims: {team: [a]}\n  - {client: svc-a, claims: {team: x}, role: R}\n",
			[]problemWant{{"rules[1].claims.team", 12, []string{"want a string", "got a list"}}}},
		{"an issuer whose user_ids is broken is no hook issuer", strings.Replace(validBase, "rules:", "  - {name: b, issuer: https://b/, audiences: [x], user_ids: [issuer]}\nrules:", 1),
			[]problemWant{{"issuers[2].user_ids", 9, []string{"want a string", "got a list"}}}},
		{"a key given twice", strings.Replace(validBase, "  path: /tmp/state.db", "  path: /tmp/state.db\n  path: /tmp/other.db", 1),
			[]problemWant{{"state.path", 5, []string{"given twice", "line 4"}}}},
		{"not YAML", "directus:\n  url: [\n", []problemWant{{"", 2, []string{"not valid YAML", "did not find"}}}},
		{"not a map", "- a\n- b\n", []problemWant{{"", 1, []string{"want a map", "got a list"}}}},
		{"two documents", validBase + "---\nlisten: x\n", []problemWant{{"", 12, []string{"more than one YAML document"}}}},
		{"semantic: unknown issuer in a rule", validBase + "  - {issuer: ghost, role: R}\n",
			[]problemWant{{"rules[2].issuer", 12, []string{`issuer "ghost"`, "not configured"}}}},
		{"semantic: missing block", strings.Replace(validBase, "state:\n  path: /tmp/state.db\n", "", 1),
			[]problemWant{{"state.path", 0, []string{"required"}}}},
		{"semantic: missing key in a present block", strings.Replace(validBase, "  path: /tmp/state.db", "  key_env: K", 1),
			[]problemWant{{"state.path", 3, []string{"required"}}}},
		{"semantic: issuer name twice", strings.Replace(validBase, "rules:", "  - {name: idp, issuer: https://b/, audiences: [x], user_ids: issuer}\nrules:", 1),
			[]problemWant{{"issuers[2].name", 9, []string{"used twice"}}}},
		{"semantic: hook ids twice", strings.Replace(validBase, "rules:", "  - {name: b, issuer: https://b/, audiences: [x]}\nrules:", 1),
			[]problemWant{{"issuers[2].user_ids", 9, []string{"all use hook user ids"}}}},
		{"semantic: claim pattern", validBase + "    claims: {team: 'a\\'}\n",
			[]problemWant{{"rules[1].claims.team", 12, []string{"unfinished escape"}}}},
		{"semantic: limits", validBase + "limits:\n  per_ip: {rate: .nan}\n",
			[]problemWant{{"limits.per_ip.rate", 13, []string{"finite number"}}}},
		{"semantic: token ttl", validBase + "tokens:\n  ttl: 1ms\n",
			[]problemWant{{"tokens.ttl", 13, []string{"between 1s and 24h"}}}},
		{"semantic: never matches", validBase + "  - {client: svc-a, role: Editor}\n",
			[]problemWant{{"rules[2]", 12, []string{"never matches", "rule 1"}}}},
		{"type error hides no semantic problem of the same key", strings.Replace(validBase, "  path: /tmp/state.db", "  path: [a]", 1),
			[]problemWant{{"state.path", 4, []string{"want a string"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got := checkConfig([]byte(tc.file))
			if len(got) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(got), len(tc.want), problemLines(got))
			}
			for i, w := range tc.want {
				p := got[i]
				if p.Path != w.path || p.Line != w.line {
					t.Errorf("problem %d at %q line %d, want %q line %d: %s", i+1, p.Path, p.Line, w.path, w.line, p.Msg)
				}
				for _, word := range w.words {
					if !strings.Contains(p.Msg, word) {
						t.Errorf("problem %d (%s): %q does not say %q", i+1, p.Path, p.Msg, word)
					}
				}
			}
		})
	}
}

func problemLines(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.Error() + "\n")
	}
	return b.String()
}

func TestConfigCheckIsValidForTheBase(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	if _, ps := checkConfig([]byte(validBase)); len(ps) != 0 {
		t.Fatalf("the base is not valid:\n%s", problemLines(ps))
	}
}

// One run lists decoding and semantic problems together.
func TestConfigCheckListsEverythingInOneRun(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	path := filepath.Join(t.TempDir(), "directus-bridge.yaml")
	file := `directus:
  url: ftp://x
  tokn_env: X
  timeout: ten
issuers:
  - {name: a, issuer: https://a/, audiences: [x], algorithms: [HS256]}
rules:
  - {issuer: ghost, role: R}
  - {all_scopes: [x]}
`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	code := run([]string{"config", "check", "-config", path}, &out, &errOut)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		path + ": 7 problems",
		path + ":2: directus.url: want an http(s) URL, got \"ftp://x\"",
		path + ":3: directus.tokn_env: unknown key; did you mean token_env?",
		path + ":4: directus.timeout: want a duration such as 10s or 1m30s, got \"ten\"",
		path + ":6: issuers[1].algorithms: issuer \"a\": algorithm \"HS256\" is not allowed",
		path + ": state.path: required",
		path + ":8: rules[1].issuer: names issuer \"ghost\", which is not configured",
		path + ":9: rules[2].role: needs a role",
		"checked offline",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr: %s", errOut.String())
	}
}

func TestConfigCheckOK(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	dir := t.TempDir()
	path := filepath.Join(dir, "directus-bridge.yaml")
	if err := os.WriteFile(path, []byte(validBase), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := run([]string{"config", "check", "-config", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	want := path + `: ok (checked offline: structure, values, issuers and rules; run "directus-bridge mappings check" to check the rules against Directus)` + "\n"
	if out.String() != want {
		t.Errorf("stdout = %q, want %q", out.String(), want)
	}

	// The default file is directus-bridge.yaml in the working directory,
	// unless DIRECTUS_BRIDGE_CONFIG names another.
	t.Chdir(dir)
	t.Setenv("DIRECTUS_BRIDGE_CONFIG", "")
	out.Reset()
	if code := run([]string{"config", "check"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "directus-bridge.yaml: ok") {
		t.Errorf("default path: exit %d, %q", code, out.String())
	}
	t.Setenv("DIRECTUS_BRIDGE_CONFIG", filepath.Join(dir, "missing.yaml"))
	out.Reset()
	errOut.Reset()
	if code := run([]string{"config", "check"}, &out, &errOut); code != 1 || !strings.Contains(out.String()+errOut.String(), "missing.yaml") {
		t.Errorf("unreadable file: exit %d, %q %q", code, out.String(), errOut.String())
	}
}

func TestConfigCheckHelp(t *testing.T) {
	var out, errOut strings.Builder
	if code := run([]string{"config", "check", "-h"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := out.String() + errOut.String()
	for _, want := range []string{"directus-bridge.yaml", "DIRECTUS_BRIDGE_CONFIG", "offline", "mappings check", "allow_admin", "numbered from 1", "Exit status: 0"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}

// serve, reload and the other commands see every problem too, with lines.
func TestLoadValidReportsDecodingAndSemanticProblems(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "x")
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(validBase, "  path: /tmp/state.db", "  pth: x", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadValid(path)
	if err == nil {
		t.Fatal("loadValid accepted a broken file")
	}
	for _, want := range []string{"line 4: state.pth: unknown key; did you mean path?", "line 3: state.path: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func FuzzConfigCheck(f *testing.F) {
	f.Add([]byte(validBase))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("issuers: &i\n  - *i\n"))
	f.Add([]byte("<<: {listen: x}\nrules: [{<<: [{role: R}], claims: {a: [b]}}]\n"))
	f.Add([]byte("? [a]\n: b\ndirectus: {timeout: [1], retries: 1e99}\n"))
	f.Add([]byte("issuers: [{required_claims: {a: {b: c}}, leeway: !!binary aGk=}]\n"))
	f.Add([]byte(claimsYAML))
	f.Add([]byte("issuers: [{client_claim: /a//b, scope_claims: ['/x~2'], required_claims: {/: 1}}]\n" +
		"rules: [{role: R, claims: {/a~: x}, condition: 'claims.a.exists(x, '}, {role: R, condition: 1}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, ps := checkConfig(b)
		// Line breaks as YAML counts them (\r\n is one).
		text := strings.ReplaceAll(string(b), "\r\n", "\n")
		lines := 1
		for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
			lines += strings.Count(text, br)
		}
		for _, p := range ps {
			if p.Msg == "" || p.Line < 0 || p.Line > lines+1 {
				t.Errorf("malformed problem %+v (the file has %d lines)", p, lines)
			}
		}
		if len(ps) == 0 {
			// What config check accepts, serve accepts.
			c, err := ParseConfig(b)
			if err == nil {
				err = c.Validate()
			}
			if err != nil {
				t.Errorf("config check accepts what ParseConfig+Validate refuse: %v", err)
			}
		}
	})
}
