package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
)

// postAdmin POSTs to the admin listener and decodes the report.
func postAdmin(t *testing.T, url, token string) (int, *bridge.Report, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	var rep bridge.Report
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
			t.Fatalf("%s: not a report: %v: %s", url, err, buf.Bytes())
		}
	}
	return resp.StatusCode, &rep, buf.String()
}

// A running server reconciles when asked on its admin listener, and
// `directus-bridge reconcile` goes through it while the server holds the
// state file.
func TestBinaryAdminReconcile(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		token := "e2e-admin-" + random() + strings.Repeat("k", 32)
		t.Setenv("DIRECTUS_BRIDGE_ADMIN_TOKEN", token)
		// A namespace of this test's own: the reconciler manages only the
		// users derived in it, not the other tests' machine users.
		ns := uuid.New()
		port, adminPort := freePort(t), freePort(t)
		rules := fmt.Sprintf("  - {any_scopes: [items:read], role: %q}", f.reader.Name)
		config := binaryConfig(d, port, filepath.Join(t.TempDir(), "s.db"), "10m", rules)
		// No watcher: the hand edit below stays the reconciler's to find.
		config = strings.Replace(config, `reconcile: {schedule: "off"}`, `reconcile: {schedule: "off", watch_interval: -1s}`, 1)
		config += fmt.Sprintf("users: {namespace: %s}\nadmin: {listen: \"127.0.0.1:%d\"}\n", ns, adminPort)
		path := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startBinaryFile(t, d, path, port)
		select {
		case err := <-p.done:
			t.Fatalf("bridge exited: %v\n%s", err, p.logs.String())
		default:
		}
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		if r := p.exchange(t, auth0.token(t, id, secret, "", "")); r.status != 200 {
			t.Fatalf("exchange: %d %v", r.status, r.body)
		}
		uid := uuid.NewSHA1(ns, []byte(id+"@clients")).String()
		handEdit := func() {
			t.Helper()
			if _, err := f.admin.UpdateUser(ctx, uid, directus.UserChange{Role: &f.writer.ID}); err != nil {
				t.Fatal(err)
			}
		}
		role := func() string {
			t.Helper()
			u, err := f.admin.User(ctx, uid)
			if err != nil {
				t.Fatal(err)
			}
			return u.Role
		}
		handEdit()
		admin := fmt.Sprintf("http://127.0.0.1:%d/v1/reconcile", adminPort)
		want := map[string]string{uid: bridge.ActRestore}

		if st, _, body := postAdmin(t, admin, ""); st != http.StatusUnauthorized {
			t.Errorf("without the token: %d %s, want 401", st, body)
		}
		if st, _, _ := postAdmin(t, fmt.Sprintf("http://127.0.0.1:%d/v1/reconcile", port), token); st != http.StatusNotFound {
			t.Errorf("/v1/reconcile on the exchange listener: %d, want 404", st)
		}
		st, dry, body := postAdmin(t, admin+"?dry_run=true", token)
		if st != http.StatusOK || !dry.DryRun {
			t.Fatalf("dry run: %d %s", st, body)
		}
		if diff := cmp.Diff(want, ownChanges(dry, uid)); diff != "" {
			t.Errorf("dry run (-want +got):\n%s", diff)
		}
		if role() != f.writer.ID {
			t.Errorf("the dry run changed Directus")
		}
		st, real, body := postAdmin(t, admin+"?dry_run=false", token)
		if st != http.StatusOK || real.DryRun {
			t.Fatalf("run: %d %s", st, body)
		}
		if diff := cmp.Diff(want, ownChanges(real, uid)); diff != "" {
			t.Errorf("run (-want +got):\n%s", diff)
		}
		if role() != f.reader.ID {
			t.Errorf("the run did not restore the role")
		}

		// The CLI, while the server runs.
		cli := func(args ...string) (int, string, string) {
			t.Helper()
			cmd := exec.Command(binary(t), append([]string{"reconcile", "-config", path}, args...)...)
			cmd.Env = append(os.Environ(), "DIRECTUS_BRIDGE_DIRECTUS_TOKEN="+d.AdminToken)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return code, out.String(), errOut.String()
		}
		handEdit()
		code, out, errOut := cli("-dry-run")
		if code != 0 || !strings.Contains(out, "would do (dry run)") || !strings.Contains(out, bridge.ActRestore+"  "+uid) {
			t.Errorf("CLI dry run: exit %d\nstdout %s\nstderr %s", code, out, errOut)
		}
		if strings.Contains(errOut, "state file") {
			t.Errorf("the CLI did not go through the server: %s", errOut)
		}
		code, out, errOut = cli("-json")
		var rep bridge.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
			t.Fatalf("CLI run: exit %d, %v\nstdout %s\nstderr %s", code, err, out, errOut)
		}
		if diff := cmp.Diff(want, ownChanges(&rep, uid)); diff != "" {
			t.Errorf("CLI run (-want +got):\n%s", diff)
		}
		if role() != f.reader.ID {
			t.Errorf("the CLI run did not restore the role")
		}
		logs := p.logs.String()
		if strings.Contains(logs, token) {
			t.Errorf("the admin token reached the log")
		}
		if n := strings.Count(logs, `"event":"admin"`); n < 5 {
			t.Errorf("%d admin calls logged, want 5:\n%s", n, logs)
		}
	})
}
