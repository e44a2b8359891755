package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProxySDK runs the official Directus SDK (e2e/sdk/check.mjs) against
// the binary's proxy listener on every Directus of the stack, with the raw
// IdP token as the SDK's static token: REST reads and writes under the
// mapped role, 403 outside it, GraphQL, a 64 MiB file up and down, realtime
// (auth message and query token), GraphQL subscriptions, a human login and
// the app through the proxy unchanged, and a refused IdP token that the SDK
// reports as an authentication error. The bridge's peak memory must not
// grow by anything near the file's size.
func TestProxySDK(t *testing.T) {
	s := requireStack(t)
	if s.SDK == nil {
		if os.Getenv("CI") != "" {
			t.Fatal("stack.json has no sdk: the stack installs testdata/stack/sdk in CI")
		}
		t.Skip("stack.json has no sdk (testdata/stack/sdk not installed)")
	}
	instances := rawInstances(t)
	auth0 := s.IdP.Issuers["auth0"]
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		in, ok := instances[d.Name]
		if !ok {
			t.Fatalf("stack.json has no directus entry %q", d.Name)
		}
		cfg := sdkFixture(t, s.SDK, in)
		fixture, _ := cfg["fixture"].(map[string]any)
		roleName, _ := fixture["role_name"].(string)
		if roleName == "" {
			t.Fatalf("fixture.mjs printed no role name: %v", fixture)
		}

		scope := "sdk:" + random()
		rules := fmt.Sprintf("  - {any_scopes: [%q], role: %q}", scope, roleName)
		port, proxyPort := freePort(t), freePort(t)
		config := binaryConfig(d, port, filepath.Join(t.TempDir(), "s.db"), "10m", rules) +
			fmt.Sprintf("proxy: {listen: \"127.0.0.1:%d\"}\n", proxyPort)
		p := startBinary(t, d, config, port)
		select {
		case err := <-p.done:
			t.Fatalf("bridge exited: %v\n%s", err, p.logs.String())
		default:
		}

		id, secret := auth0.registerClient(t, "", scope, 600)
		sub := id + "@clients"
		t.Cleanup(func() { raw(t, d, d.AdminToken, "DELETE", "/users/"+userID(sub), nil, nil) })
		// The client is one the hook extension served: its user exists, as
		// the hook wrote it, with no role yet. The proxy adopts it.
		if st := raw(t, d, d.AdminToken, "POST", "/users", map[string]any{
			"id": userID(sub), "status": "active", "external_identifier": sub,
			"first_name": "External", "last_name": "Client",
		}, nil); st != 200 {
			t.Fatalf("create the hook's user: status %d", st)
		}
		// A token of a trusted issuer that no rule maps: the bridge refuses it.
		otherID, otherSecret := auth0.registerClient(t, "", "unmapped:"+random(), 600)
		cfg["url"] = fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
		cfg["token"] = auth0.token(t, id, secret, "", "")
		cfg["bad_token"] = auth0.token(t, otherID, otherSecret, "", "")

		before := peakRSS(t, p.cmd.Process.Pid)
		var sampled sync.WaitGroup
		stop := make(chan struct{})
		var during int64
		sampled.Add(1)
		go func() { // the current RSS, sampled while the SDK runs
			defer sampled.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if v := rss(p.cmd.Process.Pid); v > during {
						during = v
					}
				}
			}
		}()
		report, out := runCheck(t, s.SDK, cfg)
		close(stop)
		sampled.Wait()
		after := peakRSS(t, p.cmd.Process.Pid)

		checks, _ := report["checks"].(map[string]any)
		for _, name := range []string{
			"items_read", "items_write", "items_forbidden", "graphql", "file", "realtime",
			"realtime_query_token", "graphql_ws", "realtime_bad_token", "login", "app", "bad_token",
		} {
			c, _ := checks[name].(map[string]any)
			if c == nil {
				t.Errorf("check %s did not run", name)
				continue
			}
			if c["ok"] != true {
				b, _ := json.Marshal(c)
				t.Errorf("check %s failed: %.3000s", name, b)
			}
		}
		if report["ok"] != true && !t.Failed() {
			t.Errorf("check.mjs failed: %.3000s", out)
		}

		// The hook's user was adopted: its id kept, the mapped role given.
		var user struct {
			Role               string `json:"role"`
			ExternalIdentifier string `json:"external_identifier"`
		}
		if code := raw(t, d, d.AdminToken, "GET", "/users/"+userID(sub)+"?fields=role,external_identifier", nil, &user); code != 200 ||
			user.Role != fixture["role"] || user.ExternalIdentifier != sub {
			t.Errorf("machine user: %d role %q external_identifier %q, want the fixture's role and %q",
				code, user.Role, user.ExternalIdentifier, sub)
		}
		// The refused token was refused by the bridge, with its audit line,
		// and wrote nothing to Directus.
		if code := raw(t, d, d.AdminToken, "GET", "/users/"+userID(otherID+"@clients"), nil, nil); code == 200 {
			t.Errorf("the refused client has a Directus user")
		}
		if logs := p.logs.String(); !strings.Contains(logs, `"via":"proxy"`) {
			t.Errorf("no audit line of a proxied exchange in the bridge's log")
		}

		// Streaming: 64 MiB went up and came down through the proxy; held
		// in memory even once, it would raise the peak by at least that.
		file, _ := checks["file"].(map[string]any)
		size, _ := cfg["file_bytes"].(float64)
		t.Logf("bridge memory: peak %d KiB before, %d KiB after, highest sampled %d KiB; file %d KiB",
			before, after, during, int64(size)/1024)
		if file != nil && file["ok"] == true && size > 0 && float64(after-before)*1024 > size/2 {
			t.Errorf("the bridge's peak memory grew by %d KiB while a %d KiB file went through: it is not streamed",
				after-before, int64(size)/1024)
		}
	})
}

// rawInstances returns stack.json's directus entries as written, with the
// fields fixture.mjs reads that Stack does not keep (admin email, password).
func rawInstances(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(os.Getenv(StackEnv))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Directus []json.RawMessage `json:"directus"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	out := map[string]json.RawMessage{}
	for _, d := range s.Directus {
		var n struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(d, &n) == nil {
			out[n.Name] = d
		}
	}
	return out
}

// sdkFixture runs fixture.mjs up with the instance and removes what it made
// at the end of the test.
func sdkFixture(t *testing.T, sdk *SDK, instance json.RawMessage) map[string]any {
	t.Helper()
	out, err := node(sdk, instance, "sdk/fixture.mjs", "up")
	if err != nil {
		t.Fatalf("fixture.mjs up: %v", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("fixture.mjs up: %v", err)
	}
	t.Cleanup(func() {
		if _, err := node(sdk, out, "sdk/fixture.mjs", "down"); err != nil {
			t.Errorf("fixture.mjs down: %v", err)
		}
	})
	return cfg
}

// runCheck runs check.mjs with cfg and returns its report and output.
func runCheck(t *testing.T, sdk *SDK, cfg map[string]any) (map[string]any, []byte) {
	t.Helper()
	in, _ := json.Marshal(cfg)
	out, err := node(sdk, in, "sdk/check.mjs")
	var report map[string]any
	if jerr := json.Unmarshal(out, &report); jerr != nil {
		t.Fatalf("check.mjs: %v, no report: %v\n%.3000s", err, jerr, out)
	}
	return report, out
}

// node runs a script of e2e/sdk with the SDK's Node, stdin as its input; a
// failure's error holds stderr (the scripts never print tokens there).
func node(sdk *SDK, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sdk.Node, args...)
	cmd.Env = append(os.Environ(), "DIRECTUS_SDK_DIR="+sdk.Dir)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// peakRSS is the process's peak resident set (VmHWM) in KiB.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	v := status(pid, "VmHWM:")
	if v < 0 {
		t.Fatalf("no VmHWM for process %d", pid)
	}
	return v
}

// rss is the process's resident set (VmRSS) in KiB, -1 when unknown.
func rss(pid int) int64 { return status(pid, "VmRSS:") }

func status(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// TestProxyRotation: clients that keep calling through the proxy while
// their static token is rotated every second and revoked in Directus two
// seconds after it was issued never see an error: the proxy always
// forwards a live token. (Here the race of a request with a rotation is
// rare enough that the test passes without the proxy's resend on 401 too:
// the resend has its own unit tests.)
func TestProxyRotation(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		rules := fmt.Sprintf("  - {any_scopes: [items:write], role: %q}", f.writer.Name)
		port, proxyPort := freePort(t), freePort(t)
		config := strings.Replace(binaryConfig(d, port, filepath.Join(t.TempDir(), "s.db"), "2s", rules),
			"rotate_before: 1s", "rotate_before: 1500ms", 1) +
			fmt.Sprintf("proxy: {listen: \"127.0.0.1:%d\"}\n", proxyPort)
		p := startBinary(t, d, config, port)
		id, secret := auth0.registerClient(t, "", "items:write", 600)
		f.deleteUsersAtEnd(t, userID(id+"@clients"))
		subject := auth0.token(t, id, secret, "", "")
		proxied := d
		proxied.URL = fmt.Sprintf("http://127.0.0.1:%d", proxyPort)

		var mu sync.Mutex
		failures := map[string]int{}
		calls := 0
		var wg sync.WaitGroup
		deadline := time.Now().Add(6 * time.Second)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; time.Now().Before(deadline); i++ {
					var code int
					if (w+i)%2 == 0 {
						code = raw(t, proxied, subject, "GET", "/items/"+f.collection+"?limit=1", nil, nil)
					} else {
						code = raw(t, proxied, subject, "POST", "/items/"+f.collection, map[string]any{"title": "rotation"}, nil)
					}
					mu.Lock()
					calls++
					if code != 200 {
						failures[strconv.Itoa(code)]++
					}
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		logs := p.logs.String()
		rotations := strings.Count(logs, `"outcome":"rotated"`)
		t.Logf("%d calls through the proxy, %d rotations, failures by status %v", calls, rotations, failures)
		if len(failures) > 0 {
			t.Errorf("calls failed while the token rotated: %v of %d", failures, calls)
		}
		if rotations < 3 {
			t.Errorf("%d rotations in 6 s with a 2 s token rotated after 0.5 s: the test did not exercise rotation", rotations)
		}
	})
}
