package directustest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/conformance"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name     string
		version  string
		database string
		major    int
	}{
		{name: "v12", version: "12.4.0", major: 12},
		{name: "v11", version: "11.17.4", major: 11},
		// The suite holds whatever the database; the stack pairs 12 with
		// PostgreSQL and 11 with SQLite, so try the other pairs here.
		{name: "v12-sqlite", version: "12.4.0", database: directustest.SQLite, major: 12},
		{name: "v11-postgres", version: "11.17.4", database: directustest.PostgreSQL, major: 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := directustest.NewServer(t, directustest.Options{Version: tc.version, Database: tc.database})
			conformance.Run(t, conformance.Target{URL: s.URL, AdminToken: s.AdminToken, Major: tc.major})
		})
	}
}

func client(t *testing.T, s *directustest.Server, token string) *directus.Client {
	t.Helper()
	c, err := directus.New(s.URL, token, directus.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// call sends one raw request with the admin token and returns the status
// and the body.
func call(t *testing.T, s *directustest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

func TestNewAdmin(t *testing.T) {
	s := directustest.NewServer(t, directustest.Options{})
	bridge, human := client(t, s, s.AdminToken), client(t, s, s.NewAdmin())
	bridgeMe, err := bridge.Me(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	humanMe, err := human.Me(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if humanMe.ID == bridgeMe.ID || humanMe.Status != "active" {
		t.Fatalf("NewAdmin's user: %+v; bridge's %+v", humanMe, bridgeMe)
	}
	if _, err := human.CreateUser(t.Context(), directus.NewUser{ID: "11111111-1111-4111-8111-111111111111"}); err != nil {
		t.Fatalf("the new admin cannot create users: %v", err)
	}
	rows, err := bridge.Activity(t.Context(), directus.ActivityFilter{}, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].User != humanMe.ID || rows[0].Action != directus.ActionCreate {
		t.Errorf("activity: %+v; want one create by %s (NewAdmin itself writes none)", rows, humanMe.ID)
	}
}

func TestSnapshot(t *testing.T) {
	s := directustest.NewServer(t, directustest.Options{Version: "11.17.4"})
	c := client(t, s, s.AdminToken)
	ctx := t.Context()
	p1, _ := c.CreatePolicy(ctx, directus.Policy{Name: "b"})
	p2, _ := c.CreatePolicy(ctx, directus.Policy{Name: "a"})
	role, _ := c.CreateRole(ctx, directus.Role{Name: "r", Policies: []string{p1.ID}})
	id := "22222222-2222-4222-8222-222222222222"
	if _, err := c.CreateUser(ctx, directus.NewUser{ID: id, Role: role.ID, Token: "tok", ExternalIdentifier: "svc",
		Policies: []string{p2.ID, p1.ID}, AuthData: json.RawMessage(`{"directus_bridge": {"client": "svc"}}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateUser(ctx, id, directus.UserChange{AddPolicies: []string{p1.ID}, Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	if len(snap) != 2 {
		t.Errorf("snapshot has %d users, want the admin and one", len(snap))
	}
	tok := "tok"
	pols := []string{p1.ID, p1.ID, p2.ID}
	if pols[0] > pols[2] {
		pols = []string{p2.ID, p1.ID, p1.ID}
	}
	want := directustest.UserState{ID: id, Status: "suspended", Role: role.ID, Token: &tok, Policies: pols,
		ExternalIdentifier: "svc", AuthData: json.RawMessage(`{"directus_bridge":{"client":"svc"}}`)}
	if diff := cmp.Diff(want, snap[id]); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	// The snapshot is a copy.
	*snap[id].Token = "changed"
	if got := *s.Snapshot()[id].Token; got != "tok" {
		t.Errorf("changing a snapshot changed the fake: token %q", got)
	}
}

func TestWritesAndFaults(t *testing.T) {
	s := directustest.NewServer(t, directustest.Options{})
	c := client(t, s, s.AdminToken)
	ctx := t.Context()
	if _, err := c.CreateUser(ctx, directus.NewUser{ID: "33333333-3333-4333-8333-333333333333"}); err != nil {
		t.Fatal(err)
	}
	_, _ = c.CreateUser(ctx, directus.NewUser{ID: "33333333-3333-4333-8333-333333333333"}) // refused, still served
	_, _ = c.User(ctx, "33333333-3333-4333-8333-333333333333")
	_ = c.Ping(ctx)
	if got := s.Writes(); got != 2 {
		t.Errorf("Writes = %d, want 2", got)
	}

	// A fault that answers without serving is not a write.
	s.SetFault(func(*http.Request) directustest.Fault { return directustest.Fault{Status: 503} })
	if err := c.DeleteUsers(ctx, []string{"33333333-3333-4333-8333-333333333333"}); !errors.Is(err, directus.ErrUnavailable) {
		t.Fatalf("DeleteUsers under a 503 fault: %v", err)
	}
	if got := s.Writes(); got != 2 {
		t.Errorf("Writes after a refused write = %d, want 2", got)
	}
	if _, ok := s.Snapshot()["33333333-3333-4333-8333-333333333333"]; !ok {
		t.Fatal("a 503 fault applied the delete")
	}

	// LoseAnswer with a status: applied, then the status at once.
	s.SetFault(func(*http.Request) directustest.Fault {
		return directustest.Fault{LoseAnswer: true, Status: 502, Delay: time.Hour}
	})
	start := time.Now()
	err := c.DeleteUsers(ctx, []string{"33333333-3333-4333-8333-333333333333"})
	var e *directus.APIError
	if !errors.As(err, &e) || e.Status != 502 || !errors.Is(err, directus.ErrUnavailable) {
		t.Fatalf("DeleteUsers under LoseAnswer+502: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("LoseAnswer+Status waited %v for Delay", d)
	}
	if _, ok := s.Snapshot()["33333333-3333-4333-8333-333333333333"]; ok {
		t.Error("LoseAnswer+502 did not apply the delete")
	}
	if got := s.Writes(); got != 3 {
		t.Errorf("Writes after a lost answer = %d, want 3", got)
	}
	s.SetFault(nil)

	s.ResetRequests()
	if s.Writes() != 0 || s.Requests() != 0 {
		t.Errorf("after ResetRequests: Writes %d, Requests %d", s.Writes(), s.Requests())
	}
}

func TestDatabaseShapes(t *testing.T) {
	const id = "44444444-4444-4444-8444-444444444444"
	user := `{"id":"` + id + `","auth_data":{"a": [1, "<&>"]},"last_access":"2026-06-01T12:00:00.123Z"}`
	long := strings.Repeat("x", 256)
	for _, tc := range []struct {
		database string
		created  string // fields auth_data,last_access of the answer to the create
		long     int    // status of a 256-character token
		text     string // answer to a PATCH writing a string that holds JSON text
	}{
		{directustest.PostgreSQL, `"auth_data":{"a":[1,"<&>"]}`, 400, `"auth_data":{"b":2}`},
		{directustest.SQLite, `"auth_data":"{\"a\":[1,\"<&>\"]}"`, 200, `"auth_data":"{\"b\": 2}"`}, // the string as written
	} {
		t.Run(tc.database, func(t *testing.T) {
			s := directustest.NewServer(t, directustest.Options{Database: tc.database})
			st, body := call(t, s, "POST", "/users", user)
			if st != 200 || !strings.Contains(body, tc.created) {
				t.Errorf("create: %d %s; want %s", st, body, tc.created)
			}
			wantAt := `"last_access":"2026-06-01T12:00:00.123Z"`
			if tc.database == directustest.SQLite {
				wantAt = `"last_access":"2026-06-01T12:00:00"`
			}
			if !strings.Contains(body, wantAt) {
				t.Errorf("create: %s; want %s", body, wantAt)
			}
			if st, body := call(t, s, "PATCH", "/users/"+id, `{"auth_data":"{\"b\": 2}"}`); st != 200 || !strings.Contains(body, tc.text) {
				t.Errorf("PATCH string: %d %s; want %s", st, body, tc.text)
			}
			if st, body := call(t, s, "PATCH", "/users/"+id, `{"token":"`+long+`"}`); st != tc.long {
				t.Errorf("256-character token: %d %s; want %d", st, body, tc.long)
			}
			// Directus clears auth_data when a PATCH carries external_identifier.
			_, _ = call(t, s, "PATCH", "/users/"+id, `{"auth_data":{"c":3}}`)
			if _, body := call(t, s, "PATCH", "/users/"+id, `{"external_identifier":"x","auth_data":{"d":4}}`); !strings.Contains(body, `"auth_data":null`) {
				t.Errorf("PATCH with external_identifier: %s; want auth_data null", body)
			}
		})
	}
	s := directustest.NewServer(t, directustest.Options{Database: directustest.PostgreSQL})
	_, _ = call(t, s, "POST", "/users", `{"id":"`+id+`"}`)
	if st, body := call(t, s, "PATCH", "/users/"+id, `{"auth_data":"plain"}`); st != 500 || !strings.Contains(body, "INTERNAL_SERVER_ERROR") {
		t.Errorf("PostgreSQL, a string that is not JSON: %d %s; want 500", st, body)
	}
}

func TestErrorBodies(t *testing.T) {
	s := directustest.NewServer(t, directustest.Options{})
	_, _ = call(t, s, "POST", "/users", `{"id":"55555555-5555-4555-8555-555555555555","external_identifier":"svc"}`)
	st, body := call(t, s, "POST", "/users", `{"id":"66666666-6666-4666-8666-666666666666","external_identifier":"svc"}`)
	want := `{"errors":[{"extensions":{"code":"RECORD_NOT_UNIQUE","collection":"directus_users","field":"external_identifier","value":"svc"},` +
		`"message":"Value \"svc\" for field \"external_identifier\" in collection \"directus_users\" has to be unique."}]}`
	var gotV, wantV any
	_ = json.Unmarshal([]byte(body), &gotV)
	_ = json.Unmarshal([]byte(want), &wantV)
	if st != 400 || !cmp.Equal(wantV, gotV) {
		t.Errorf("duplicate external_identifier: %d %s; want 400 %s", st, body, want)
	}
	if st, body := call(t, s, "GET", "/users?filter[id][_eq]=x", ""); st != 400 {
		t.Errorf("bracket filter: %d %s; want 400 (the fake speaks JSON filters only)", st, body)
	}
	if st, body := call(t, s, "GET", `/users?filter={"token":{"_eq":"x"}}`, ""); st != 400 || !strings.Contains(body, "INVALID_QUERY") {
		t.Errorf("filter on the token's value: %d %s; want 400 INVALID_QUERY", st, body)
	}
}

func TestActivityWindow(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    int
	}{{"12.4.0", 1}, {"11.17.4", 2}} {
		t.Run(tc.version, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			s := directustest.NewServer(t, directustest.Options{Version: tc.version, Now: func() time.Time { return now }})
			c := client(t, s, s.AdminToken)
			if err := c.DeleteUsers(t.Context(), []string{"77777777-7777-4777-8777-777777777777"}); err != nil {
				t.Fatal(err)
			}
			now = now.Add(31 * 24 * time.Hour)
			if err := c.DeleteUsers(t.Context(), []string{"77777777-7777-4777-8777-777777777777"}); err != nil {
				t.Fatal(err)
			}
			rows, err := c.Activity(t.Context(), directus.ActivityFilter{}, -1)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tc.want {
				t.Errorf("visible rows: %d, want %d (Directus 12 Core shows 30 days)", len(rows), tc.want)
			}
		})
	}
}
