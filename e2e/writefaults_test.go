package e2e

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

// faultModes are the two ways a write fails: Directus never saw it, or it
// applied it and the answer was lost.
var faultModes = []struct {
	name string
	mode faultMode
}{
	{"AnswerLostAfterWrite", faultLoseAnswer},
	{"RefusedBeforeWrite", faultRefuse},
}

// proxiedDirectus is a fault proxy in front of d and a bridge-side client
// that goes through it without retries, so that every fault reaches the
// bridge.
func proxiedDirectus(t *testing.T, d DirectusInstance) (*faultProxy, *directus.Client) {
	t.Helper()
	p := newFaultProxy(t, d.URL)
	c, err := directus.New(p.URL, d.AdminToken, directus.Options{Retries: -1, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// wantUnavailable checks that r is the 503 of a failed Directus write and
// that the armed fault did act.
func wantUnavailable(t *testing.T, p *faultProxy, r exchanged, what string) {
	t.Helper()
	if left := p.armedLeft(); left != 0 {
		p.disarm()
		t.Fatalf("%s: the exchange never sent the request the fault was armed for (%d fault left); requests: %v", what, left, p.requests())
	}
	if r.status != 503 || r.retryAfter == "" || r.code() != "temporarily_unavailable" {
		t.Fatalf("%s: %d Retry-After=%q %v, want 503 temporarily_unavailable with Retry-After", what, r.status, r.retryAfter, r.body)
	}
}

// directusUser reads the user with the admin token, straight from Directus.
func (f *fixture) directusUser(t *testing.T, id string) directus.User {
	t.Helper()
	u, err := f.admin.User(context.Background(), id)
	if err != nil {
		t.Fatalf("read user %s in Directus: %v", id, err)
	}
	return u
}

// status is the HTTP status Directus answers GET /users/me with token.
func (f *fixture) status(t *testing.T, token string) int {
	t.Helper()
	return raw(t, f.d, token, "GET", "/users/me", nil, nil)
}

func TestWriteFaults(t *testing.T) {
	forEachDirectus(t, func(t *testing.T, d DirectusInstance) {
		ctx := context.Background()
		f := newFixture(t, d)
		p, viaProxy := proxiedDirectus(t, d)
		auth0 := stack.IdP.Issuers["auth0"]

		// (i), (ii): the rules are reloaded so that the writer's scope maps
		// to the reader role and no policy; the PATCH that applies it fails.
		for _, m := range faultModes {
			t.Run("RemapPATCH"+m.name, func(t *testing.T) {
				t.Cleanup(p.disarm)
				b := startBridgeWith(t, f, bridgeSetup{directus: viaProxy})
				id, secret := auth0.registerClient(t, "", "items:write", 600)
				uid := b.userID(t, "auth0", id+"@clients")
				f.deleteUsersAtEnd(t, uid)
				subject := auth0.token(t, id, secret, "", "")
				first := b.exchange(t, subject, "")
				if first.status != 200 {
					t.Fatalf("first exchange: %d %v", first.status, first.body)
				}
				if u := f.directusUser(t, uid); u.Role != f.writer.ID || len(u.Access) != 1 || u.Access[0].Policy != f.audit.ID {
					t.Fatalf("before the remap: role %s policies %v, want the writer role and the audit policy", u.Role, u.PolicyIDs())
				}

				remapped, _, err := bridge.LoadMapper(ctx, f.admin, mapping.Rules{
					{Name: "readers", AnyScopes: []string{"items:write", "items:read"}, Role: f.reader.Name},
				})
				if err != nil {
					t.Fatal(err)
				}
				b.ex.SetMapper(remapped)
				p.arm("PATCH", "/users/"+uid, m.mode)
				wantUnavailable(t, p, b.exchange(t, subject, ""), "exchange whose PATCH fails")
				u := f.directusUser(t, uid)
				switch m.mode {
				case faultLoseAnswer: // Directus applied the PATCH
					if u.Role != f.reader.ID || len(u.Access) != 0 {
						t.Fatalf("after the lost PATCH Directus holds role %s policies %v: the write was not applied", u.Role, u.PolicyIDs())
					}
				case faultRefuse: // the PATCH never reached Directus
					if u.Role != f.writer.ID || len(u.Access) != 1 {
						t.Fatalf("after the refused PATCH Directus holds role %s policies %v: something was written", u.Role, u.PolicyIDs())
					}
				}

				r := b.exchange(t, subject, "")
				if r.status != 200 || r.token() == "" {
					t.Fatalf("exchange after the fault: %d %v, want 200", r.status, r.body)
				}
				u = f.directusUser(t, uid)
				if u.Role != f.reader.ID || len(u.Access) != 0 || u.Status != "active" || !u.HasToken {
					t.Errorf("Directus holds role %s policies %v status %s token %v; want exactly the reader role, no direct policy, active, a token",
						u.Role, u.PolicyIDs(), u.Status, u.HasToken)
				}
				if read, create := f.can(t, r.token()); !read || create {
					t.Errorf("the returned token: read=%v create=%v, want true false", read, create)
				}
				if first.token() != r.token() {
					if st := f.status(t, first.token()); st != 401 {
						t.Errorf("the writer's earlier token answers %d in Directus, want 401", st)
					}
				}
			})
		}

		// (iii) a rotation whose PATCH fails: the old token and the one
		// written ahead both die in Directus within their expiry plus a few
		// revoke intervals.
		for _, m := range faultModes {
			t.Run("RotationPATCH"+m.name, func(t *testing.T) {
				t.Cleanup(p.disarm)
				const ttl, revokeEvery = 6 * time.Second, time.Second
				b := startBridgeWith(t, f, bridgeSetup{directus: viaProxy, tokens: bridge.TokenConfig{
					TTL: bridge.Duration(ttl), RotateBefore: bridge.Duration(5 * time.Second), RevokeInterval: bridge.Duration(revokeEvery)}})
				id, secret := auth0.registerClient(t, "", "items:read", 600)
				uid := b.userID(t, "auth0", id+"@clients")
				f.deleteUsersAtEnd(t, uid)
				subject := auth0.token(t, id, secret, "", "")
				start := time.Now()
				first := b.exchange(t, subject, "")
				if first.status != 200 || f.status(t, first.token()) != 200 {
					t.Fatalf("first exchange: %d %v (or its token does not work)", first.status, first.body)
				}
				expiresIn, _ := first.body["expires_in"].(float64)
				if expiresIn <= 0 || expiresIn > ttl.Seconds() {
					t.Fatalf("expires_in %v, want (0, %v]", first.body["expires_in"], ttl.Seconds())
				}
				firstExpiry := start.Add(time.Duration(expiresIn) * time.Second)

				time.Sleep(1500 * time.Millisecond) // less than rotate_before (5s) is left
				p.arm("PATCH", "/users/"+uid, m.mode)
				rotatedAt := time.Now()
				wantUnavailable(t, p, b.exchange(t, subject, ""), "rotation whose PATCH fails")
				if m.mode == faultLoseAnswer {
					// Directus holds the new token: the old one is refused at once.
					if st := f.status(t, first.token()); st != 401 {
						t.Fatalf("after the lost rotation the old token answers %d, want 401: the rotation was not applied", st)
					}
				}

				deadline := firstExpiry.Add(4*revokeEvery + 2*time.Second)
				for st := f.status(t, first.token()); st != 401; st = f.status(t, first.token()) {
					if st != 200 {
						t.Fatalf("old token: Directus answered %d, want 200 or 401", st)
					}
					if time.Now().After(deadline) {
						t.Fatalf("the old token still works %v after its expiry", time.Since(firstExpiry).Round(time.Millisecond))
					}
					time.Sleep(200 * time.Millisecond)
				}
				// Whatever token the failed rotation may have written is
				// revoked by its own expiry too: the user holds none.
				deadline = rotatedAt.Add(ttl + 4*revokeEvery + 2*time.Second)
				for f.directusUser(t, uid).HasToken {
					if time.Now().After(deadline) {
						t.Fatalf("the user still holds a token %v after the failed rotation (TTL %v)", time.Since(rotatedAt).Round(time.Millisecond), ttl)
					}
					time.Sleep(200 * time.Millisecond)
				}
				// and the client gets a working token again.
				r := b.exchange(t, subject, "")
				if r.status != 200 || f.status(t, r.token()) != 200 {
					t.Errorf("exchange after the revocations: %d %v (or its token does not work)", r.status, r.body)
				}
			})
		}

		// (iv) the first exchange's POST /users fails.
		for _, m := range faultModes {
			t.Run("CreatePOST"+m.name, func(t *testing.T) {
				t.Cleanup(p.disarm)
				b := startBridgeWith(t, f, bridgeSetup{directus: viaProxy})
				id, secret := auth0.registerClient(t, "", "items:write", 600)
				sub := id + "@clients"
				uid := b.userID(t, "auth0", sub)
				f.deleteUsersAtEnd(t, uid)
				subject := auth0.token(t, id, secret, "", "")
				p.arm("POST", "/users", m.mode)
				wantUnavailable(t, p, b.exchange(t, subject, ""), "first exchange whose POST /users fails")
				_, err := f.admin.User(ctx, uid)
				switch {
				case m.mode == faultLoseAnswer && err != nil:
					t.Fatalf("after the lost POST the user is not in Directus (%v): the write was not applied", err)
				case m.mode == faultRefuse && !errors.Is(err, directus.ErrNotFound):
					t.Fatalf("after the refused POST: %v, want no user", err)
				}

				r := b.exchange(t, subject, "")
				if r.status != 200 {
					t.Fatalf("exchange after the fault: %d %v, want 200", r.status, r.body)
				}
				var same []struct {
					ID string `json:"id"`
				}
				q := url.Values{"fields": {"id"}, "limit": {"-1"}, "filter[external_identifier][_eq]": {sub}}
				if st := raw(t, d, d.AdminToken, "GET", "/users?"+q.Encode(), nil, &same); st != 200 || len(same) != 1 || same[0].ID != uid {
					t.Errorf("users with external_identifier %s: %d %v, want exactly %s", sub, st, same, uid)
				}
				u := f.directusUser(t, uid)
				if u.Role != f.writer.ID || len(u.Access) != 1 || u.Access[0].Policy != f.audit.ID || u.Status != "active" {
					t.Errorf("Directus holds role %s policies %v status %s; want the writer role, the audit policy once, active",
						u.Role, u.PolicyIDs(), u.Status)
				}
				if read, create := f.can(t, r.token()); !read || !create {
					t.Errorf("the returned token: read=%v create=%v, want true true", read, create)
				}
			})
		}
	})
}
