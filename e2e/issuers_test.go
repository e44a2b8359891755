package e2e

import (
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// crossIssuers configures the supertokens and eddsa issuers, the named one
// with the hook extension's user ids and the other with issuer-scoped ids.
// Both use sub = client_id, so one client id registered at both is the same
// sub.
func crossIssuers(hook string) []bridge.IssuerConfig {
	idp := stack.IdP.Issuers
	ids := func(name string) string {
		if name == hook {
			return hookIDs
		}
		return issuerIDs
	}
	return []bridge.IssuerConfig{
		{Name: "supertokens", Issuer: idp["supertokens"].Issuer, Audiences: []string{idp["supertokens"].Audience}, UserIDs: ids("supertokens"),
			Algorithms: []string{"ES256"}, RequiredClaims: map[string]any{"stt": 1}, ScopeClaims: []string{"scp"}},
		{Name: "eddsa", Issuer: idp["eddsa"].Issuer, Audiences: []string{idp["eddsa"].Audience}, UserIDs: ids("eddsa"),
			Algorithms: []string{"EdDSA"}},
	}
}

// authData is the bridge's member of a user's auth_data.
type authData struct {
	Issuer string `json:"issuer"`
	Client string `json:"client"`
}

// bridgeAuthData reads auth_data.directus_bridge of a user straight from
// Directus (PostgreSQL answers a JSON object, SQLite the JSON text).
func bridgeAuthData(t *testing.T, d DirectusInstance, id string) authData {
	t.Helper()
	var u struct {
		AuthData json.RawMessage `json:"auth_data"`
	}
	if st := raw(t, d, d.AdminToken, "GET", "/users/"+id+"?fields=auth_data", nil, &u); st != 200 {
		t.Fatalf("read auth_data of %s: status %d", id, st)
	}
	data := u.AuthData
	var text string
	if json.Unmarshal(data, &text) == nil {
		data = []byte(text)
	}
	var ad struct {
		Bridge authData `json:"directus_bridge"`
	}
	if len(data) > 0 && string(data) != "null" {
		if err := json.Unmarshal(data, &ad); err != nil {
			t.Fatalf("auth_data of %s is %s: %v", id, u.AuthData, err)
		}
	}
	return ad.Bridge
}

// me is the id of the user a Directus token belongs to ("" when refused).
func (f *fixture) me(t *testing.T, token string) string {
	t.Helper()
	var u struct {
		ID string `json:"id"`
	}
	if raw(t, f.d, token, "GET", "/users/me?fields=id", nil, &u) != 200 {
		return ""
	}
	return u.ID
}

func TestCrossIssuer(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		p, viaProxy := proxiedDirectus(t, d)
		st, ed := stack.IdP.Issuers["supertokens"], stack.IdP.Issuers["eddsa"]
		rules := mapping.Rules{
			{Name: "supertokens-writers", Issuer: "supertokens", AnyScopes: []string{"items:write"}, Role: f.writer.Name},
			{Name: "eddsa-readers", Issuer: "eddsa", AnyScopes: []string{"items:read"}, Role: f.reader.Name},
		}
		// sameClient registers one random client id at both issuers and
		// returns a subject token of each.
		sameClient := func(t *testing.T) (client, stSubject, edSubject string) {
			t.Helper()
			client = "svc-" + random()
			if id, secret := st.registerClient(t, client, "items:write", 600); id != client {
				t.Fatalf("supertokens registered %q, want %q", id, client)
			} else {
				stSubject = st.token(t, id, secret, "", "")
			}
			if id, secret := ed.registerClient(t, client, "items:read", 600); id != client {
				t.Fatalf("eddsa registered %q, want %q", id, client)
			} else {
				edSubject = ed.token(t, id, secret, "", "")
			}
			return client, stSubject, edSubject
		}
		// wantBoundTo checks the Directus user of the supertokens client:
		// its rule's role, its hook-style external identifier, bound to
		// supertokens, and token still working.
		wantBoundTo := func(t *testing.T, uid, client, token string) {
			t.Helper()
			u := f.directusUser(t, uid)
			if u.Role != f.writer.ID || u.ExternalIdentifier != client || u.Status != "active" {
				t.Errorf("user %s: role %s external_identifier %q status %s, want the writer role, %q, active",
					uid, u.Role, u.ExternalIdentifier, u.Status, client)
			}
			if ad := bridgeAuthData(t, d, uid); ad != (authData{Issuer: st.Issuer, Client: client}) {
				t.Errorf("user %s: auth_data.directus_bridge = %+v, want issuer %s client %s", uid, ad, st.Issuer, client)
			}
			if read, create := f.can(t, token); !read || !create {
				t.Errorf("the supertokens client's token: read=%v create=%v, want true true", read, create)
			}
		}
		// wantRefused exchanges subject at b and checks that it is refused
		// as a client bound to another issuer, and what reached Directus:
		// no write at all (strict), or no write that Directus applied.
		wantRefused := func(t *testing.T, b *bridgeUnderTest, subject string, strict bool) {
			t.Helper()
			for attempt := 1; attempt <= 2; attempt++ {
				before := len(p.requests())
				r := b.exchange(t, subject, "")
				desc, _ := r.body["error_description"].(string)
				if r.status != 400 || r.code() != "unauthorized_client" || !strings.Contains(desc, "another issuer") {
					t.Errorf("attempt %d: %d %v, want 400 unauthorized_client mentioning another issuer", attempt, r.status, r.body)
				}
				writes := p.writesSince(before)
				var applied []proxied
				for _, w := range writes {
					if w.Status >= 200 && w.Status < 300 {
						applied = append(applied, w)
					}
				}
				switch {
				case len(applied) > 0:
					t.Errorf("attempt %d: the refused exchange wrote to Directus: %v", attempt, applied)
				case strict && len(writes) > 0:
					t.Errorf("attempt %d: the refused exchange sent writes although its state knows the binding: %v", attempt, writes)
				case len(writes) > 0:
					t.Logf("attempt %d: writes Directus refused: %v", attempt, writes)
				}
			}
		}

		t.Run("OneHookIssuerOnly", func(t *testing.T) {
			issuers := crossIssuers("supertokens")
			issuers[1].UserIDs = hookIDs
			if _, err := bridge.NewExchanger(bridge.Options{Issuers: issuers, Directus: f.admin, Store: bridge.NewMemoryStore()}); err == nil {
				t.Errorf("NewExchanger accepted two issuers with hook user ids")
			}
		})

		t.Run("SameClientIDAtTwoIssuers", func(t *testing.T) {
			b := startBridgeWith(t, f, bridgeSetup{issuers: crossIssuers("supertokens"), directus: viaProxy, rules: rules})
			client, stSubject, edSubject := sameClient(t)
			stID, edID := b.userID(t, "supertokens", client), b.userID(t, "eddsa", client)
			f.deleteUsersAtEnd(t, stID, edID)
			if stID != userID(client) {
				t.Errorf("supertokens (hook ids): user id %s, want uuidv5(NIL, sub) = %s", stID, userID(client))
			}
			if want := uuid.NewSHA1(uuid.Nil, []byte("directus-bridge\x00"+ed.Issuer+"\x00"+client)).String(); edID != want {
				t.Errorf("eddsa (issuer ids): user id %s, want uuidv5(NIL, \"directus-bridge\\x00\"+issuer+\"\\x00\"+client) = %s", edID, want)
			}
			if stID == edID {
				t.Fatalf("both issuers map client %s to user %s", client, stID)
			}

			stR, edR := b.exchange(t, stSubject, ""), b.exchange(t, edSubject, "")
			if stR.status != 200 || edR.status != 200 {
				t.Fatalf("exchanges: supertokens %d %v, eddsa %d %v; want 200 both", stR.status, stR.body, edR.status, edR.body)
			}
			if stR.token() == edR.token() {
				t.Fatalf("both clients got the same token")
			}
			wantBoundTo(t, stID, client, stR.token())
			u := f.directusUser(t, edID)
			if u.Role != f.reader.ID || u.ExternalIdentifier != "eddsa:"+client || u.Status != "active" {
				t.Errorf("eddsa user: role %s external_identifier %q status %s, want the reader role, %q, active",
					u.Role, u.ExternalIdentifier, u.Status, "eddsa:"+client)
			}
			if ad := bridgeAuthData(t, d, edID); ad != (authData{Issuer: ed.Issuer, Client: client}) {
				t.Errorf("eddsa user: auth_data.directus_bridge = %+v, want issuer %s client %s", ad, ed.Issuer, client)
			}
			if read, create := f.can(t, edR.token()); !read || create {
				t.Errorf("the eddsa client's token: read=%v create=%v, want true false", read, create)
			}
			if got := f.me(t, stR.token()); got != stID {
				t.Errorf("the supertokens token belongs to %q, want %s", got, stID)
			}
			if got := f.me(t, edR.token()); got != edID {
				t.Errorf("the eddsa token belongs to %q, want %s", got, edID)
			}
			// Each client keeps its own token.
			if r := b.exchange(t, stSubject, ""); r.status != 200 || r.token() != stR.token() {
				t.Errorf("supertokens again: %d, same token %v", r.status, r.token() == stR.token())
			}
			if r := b.exchange(t, edSubject, ""); r.status != 200 || r.token() != edR.token() {
				t.Errorf("eddsa again: %d, same token %v", r.status, r.token() == edR.token())
			}
		})

		// An operator moves the hook ids from supertokens to eddsa: the
		// eddsa client with the same sub now maps to the supertokens
		// client's user, and must not take it over.
		t.Run("HookIDsMovedWithState", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			key := make([]byte, 32)
			_, _ = rand.Read(key)
			first, err := bridge.OpenStore(path, key)
			if err != nil {
				t.Fatal(err)
			}
			closeFirst := func() {
				if first != nil {
					if err := first.Close(); err != nil {
						t.Errorf("close the first state: %v", err)
					}
					first = nil
				}
			}
			t.Cleanup(closeFirst)
			a := startBridgeWith(t, f, bridgeSetup{issuers: crossIssuers("supertokens"), directus: viaProxy, store: first, rules: rules})
			client, stSubject, edSubject := sameClient(t)
			uid := a.userID(t, "supertokens", client)
			f.deleteUsersAtEnd(t, uid)
			r := a.exchange(t, stSubject, "")
			if r.status != 200 {
				t.Fatalf("supertokens exchange: %d %v", r.status, r.body)
			}
			a.stop()
			closeFirst()

			again, err := bridge.OpenStore(path, key)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = again.Close() })
			b := startBridgeWith(t, f, bridgeSetup{issuers: crossIssuers("eddsa"), directus: viaProxy, store: again, rules: rules})
			if got := b.userID(t, "eddsa", client); got != uid {
				t.Fatalf("eddsa (now hook ids): user id %s, want the supertokens client's %s", got, uid)
			}
			wantRefused(t, b, edSubject, true)
			wantBoundTo(t, uid, client, r.token())
		})

		t.Run("HookIDsMovedWithoutState", func(t *testing.T) {
			a := startBridgeWith(t, f, bridgeSetup{issuers: crossIssuers("supertokens"), directus: viaProxy, rules: rules})
			client, stSubject, edSubject := sameClient(t)
			uid := a.userID(t, "supertokens", client)
			f.deleteUsersAtEnd(t, uid)
			r := a.exchange(t, stSubject, "")
			if r.status != 200 {
				t.Fatalf("supertokens exchange: %d %v", r.status, r.body)
			}
			a.stop()

			// A fresh, empty state: only Directus's auth_data knows the binding.
			b := startBridgeWith(t, f, bridgeSetup{issuers: crossIssuers("eddsa"), directus: viaProxy, rules: rules})
			if got := b.userID(t, "eddsa", client); got != uid {
				t.Fatalf("eddsa (now hook ids): user id %s, want the supertokens client's %s", got, uid)
			}
			wantRefused(t, b, edSubject, false)
			wantBoundTo(t, uid, client, r.token())
		})
	})
}

// TestHookUserAdopted: a machine user the hook extension created (id
// uuidv5(NIL, sub), external_identifier = sub, no binding) is taken over by
// a bridge that has never seen it, with its id kept, as DIRECTUS.md asks.
func TestHookUserAdopted(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		f := newFixture(t, d)
		p, viaProxy := proxiedDirectus(t, d)
		auth0 := stack.IdP.Issuers["auth0"]
		b := startBridgeWith(t, f, bridgeSetup{directus: viaProxy})
		id, secret := auth0.registerClient(t, "", "items:write", 600)
		sub := id + "@clients"
		uid := userID(sub)
		f.deleteUsersAtEnd(t, uid)
		if st := raw(t, d, d.AdminToken, "POST", "/users", map[string]any{
			"id": uid, "status": "active", "role": f.reader.ID, "external_identifier": sub,
			"first_name": "External", "last_name": "Client",
		}, nil); st != 200 {
			t.Fatalf("create the hook's user: status %d", st)
		}
		r := b.exchange(t, auth0.token(t, id, secret, "", ""), "")
		if r.status != 200 {
			t.Fatalf("exchange for the hook's user: %d %v; requests: %v", r.status, r.body, p.requests())
		}
		u := f.directusUser(t, uid)
		if u.Role != f.writer.ID || len(u.Access) != 1 || u.Access[0].Policy != f.audit.ID || u.ExternalIdentifier != sub {
			t.Errorf("adopted user: role %s policies %v external_identifier %q; want the writer role, the audit policy, %q",
				u.Role, u.PolicyIDs(), u.ExternalIdentifier, sub)
		}
		if ad := bridgeAuthData(t, d, uid); ad != (authData{Issuer: auth0.Issuer, Client: sub}) {
			t.Errorf("adopted user: auth_data.directus_bridge = %+v, want issuer %s client %s", ad, auth0.Issuer, sub)
		}
		if got := f.me(t, r.token()); got != uid {
			t.Errorf("the token belongs to %q, want %s", got, uid)
		}
	})
}
