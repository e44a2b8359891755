package directus

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadAuthData(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string // the auth_data member as Directus sends it
		want string // "" for nil
	}{
		{name: "PostgreSQL object", raw: `{"directus_bridge": {"issuer":"https://issuer.example/","client":"svc"}}`,
			want: `{"directus_bridge":{"issuer":"https://issuer.example/","client":"svc"}}`},
		{name: "SQLite text", raw: `"{\"directus_bridge\":{\"issuer\":\"https://issuer.example/\",\"client\":\"svc\"}}"`,
			want: `{"directus_bridge":{"issuer":"https://issuer.example/","client":"svc"}}`},
		{name: "null", raw: `null`},
		{name: "absent", raw: ``},
		{name: "SQLite text null", raw: `"null"`},
		{name: "number", raw: `42`, want: `42`},
		{name: "plain string", raw: `"plain"`, want: `"plain"`},
		{name: "SQLite array", raw: `"[1, 2]"`, want: `[1,2]`},
		{name: "no HTML escaping", raw: `{"a":"<&>"}`, want: `{"a":"<&>"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readJSON(json.RawMessage(tc.raw))
			if tc.want == "" {
				if got != nil {
					t.Errorf("readJSON(%s) = %s, want nil", tc.raw, got)
				}
				return
			}
			if string(got) != tc.want {
				t.Errorf("readJSON(%s) = %s, want %s", tc.raw, got, tc.want)
			}
		})
	}
}

func FuzzReadJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `"{\"a\":1}"`, `null`, `"x"`, `[1]`, `""`, `"null"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if !json.Valid([]byte(raw)) {
			return // the decoder only hands over valid JSON
		}
		got := readJSON(json.RawMessage(raw))
		if got != nil && !json.Valid(got) {
			t.Fatalf("readJSON(%q) = %q, not JSON", raw, got)
		}
		if string(got) == "null" {
			t.Fatalf("readJSON(%q) = null, want nil", raw)
		}
	})
}

const userAnswer = `{"data":{"id":"u1","status":"active","role":null,"provider":"default","token":null,"policies":[],
	"auth_data":"{\"directus_bridge\":{\"issuer\":\"https://issuer.example/\",\"client\":\"svc\"}}"}}`

func TestCreateUserSendsAuthData(t *testing.T) {
	c, rec := serve(t, 200, userAnswer)
	got, err := c.CreateUser(t.Context(), NewUser{ID: "u1", AuthData: json.RawMessage(`{"directus_bridge": {"issuer": "https://issuer.example/", "client": "svc"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal([]byte(rec.body), &body); err != nil {
		t.Fatal(err)
	}
	if s := string(body["auth_data"]); s != `{"directus_bridge":{"issuer":"https://issuer.example/","client":"svc"}}` {
		t.Errorf("sent auth_data %s, want the object, compacted", s)
	}
	if want := `{"directus_bridge":{"issuer":"https://issuer.example/","client":"svc"}}`; string(got.AuthData) != want {
		t.Errorf("AuthData = %s, want %s", got.AuthData, want)
	}
	if rec.query["fields"] != userFields {
		t.Errorf("fields = %q, want %q", rec.query["fields"], userFields)
	}

	if _, err := c.CreateUser(t.Context(), NewUser{ID: "u2"}); err != nil {
		t.Fatal(err)
	}
	body = nil
	if err := json.Unmarshal([]byte(rec.body), &body); err != nil {
		t.Fatal(err)
	}
	if _, sent := body["auth_data"]; sent {
		t.Errorf("nil AuthData was sent: %s", rec.body)
	}
}

func TestUserChangeAuthData(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ch       UserChange
		wantBody string
	}{
		{name: "object", ch: UserChange{AuthData: json.RawMessage(`{"a": 1}`)}, wantBody: `{"auth_data":{"a":1}}`},
		{name: "null clears", ch: UserChange{AuthData: json.RawMessage(`null`)}, wantBody: `{"auth_data":null}`},
		{name: "with status", ch: UserChange{Status: Ptr("active"), AuthData: json.RawMessage(`{}`)}, wantBody: `{"auth_data":{},"status":"active"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ch.Empty() {
				t.Fatalf("Empty() is true for %+v", tc.ch)
			}
			c, rec := serve(t, 200, userAnswer)
			if _, err := c.UpdateUser(t.Context(), "u1", tc.ch); err != nil {
				t.Fatal(err)
			}
			if rec.method != http.MethodPatch || rec.path != "/users/u1" || rec.body != tc.wantBody {
				t.Errorf("sent %s %s %s, want PATCH /users/u1 %s", rec.method, rec.path, rec.body, tc.wantBody)
			}
			if err := c.UpdateUsers(t.Context(), []string{"u1", "u2"}, tc.ch); err != nil {
				t.Fatal(err)
			}
			if want := `{"data":` + tc.wantBody + `,"keys":["u1","u2"]}`; rec.method != http.MethodPatch || rec.path != "/users" || rec.body != want {
				t.Errorf("batch sent %s %s %s, want PATCH /users %s", rec.method, rec.path, rec.body, want)
			}
		})
	}
	if !(UserChange{}).Empty() {
		t.Error("zero UserChange is not Empty")
	}
}

func TestInvalidAuthDataIsNotSent(t *testing.T) {
	c, rec := serve(t, 200, userAnswer)
	bad := json.RawMessage(`{"a":`)
	if _, err := c.CreateUser(t.Context(), NewUser{ID: "u1", AuthData: bad}); err == nil {
		t.Error("CreateUser with invalid auth_data: no error")
	}
	if _, err := c.UpdateUser(t.Context(), "u1", UserChange{AuthData: bad}); err == nil {
		t.Error("UpdateUser with invalid auth_data: no error")
	}
	if err := c.UpdateUsers(t.Context(), []string{"u1"}, UserChange{AuthData: bad}); err == nil {
		t.Error("UpdateUsers with invalid auth_data: no error")
	}
	if rec.method != "" {
		t.Errorf("a request was sent: %s %s %s", rec.method, rec.path, rec.body)
	}
}

func TestMeFields(t *testing.T) {
	c, rec := serve(t, 200, `{"data":{"id":"u1"}}`)
	me, err := c.Me(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(User{ID: "u1"}, me); diff != "" {
		t.Errorf("Me of a user without app access (-want +got):\n%s", diff)
	}
	if rec.path != "/users/me" || rec.query["fields"] != "id,status,role" {
		t.Errorf("sent %s?%v, want /users/me?fields=id,status,role", rec.path, rec.query)
	}
}
