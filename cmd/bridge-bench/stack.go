package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// stack is the part of testdata/stack's stack.json the benchmark reads (the
// e2e package has the full description).
type stack struct {
	Directus []directusInstance `json:"directus"`
	IdP      struct {
		URL     string            `json:"url"`
		Issuers map[string]issuer `json:"issuers"`
	} `json:"idp"`
	// Postgres is the bridge's own state database, when the stack runs
	// PostgreSQL (with Directus 12).
	Postgres struct {
		DSN string `json:"dsn"` // password inside: never printed
	} `json:"postgres"`
	// Hook is the common hook extension, installed with its dependencies
	// (testdata/stack/hook), when the stack has it: the proxy rows load it
	// into Directus 11 for the hook row.
	Hook *struct {
		Dir string `json:"dir"`
	} `json:"hook"`
	Dir    string `json:"dir"`          // the stack's folder: DIR/<name>/extensions, DIR/<name>/extra.env
	Script string `json:"stack_script"` // stack.sh, to restart one Directus
}

type directusInstance struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	Database   string `json:"database"`
	URL        string `json:"url"`
	AdminToken string `json:"admin_token"`
}

type issuer struct {
	Issuer               string `json:"issuer"`
	Alg                  string `json:"alg"`
	JWKSURI              string `json:"jwks_uri"`
	TokenEndpoint        string `json:"token_endpoint"`
	RegistrationEndpoint string `json:"registration_endpoint"`
	Audience             string `json:"audience"`
}

func loadStack(path string) (*stack, error) {
	if path == "" {
		return nil, fmt.Errorf("no stack: set DIRECTUS_BRIDGE_STACK or -stack (make bench brings one up)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s stack
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.Directus) == 0 {
		return nil, fmt.Errorf("%s: no Directus", path)
	}
	for _, name := range []string{"auth0", "supertokens", "eddsa"} {
		if _, ok := s.IdP.Issuers[name]; !ok {
			return nil, fmt.Errorf("%s: no %s issuer", path, name)
		}
	}
	return &s, nil
}

// subjectOf is the client claim the stack's issuers put in their tokens:
// Auth0 says "<client_id>@clients", the others the client id.
func subjectOf(issuerName, clientID string) string {
	if issuerName == "auth0" {
		return clientID + "@clients"
	}
	return clientID
}

// idpClient is a client registered at the stack's IdP with its access token.
type idpClient struct {
	ID      string // client id
	Subject string // the token's client claim
	Token   string // a client-credentials access token
}

// registerClients registers n client-credentials clients named prefix-<i>
// at the issuer (open dynamic registration, RFC 7591) and gets one access
// token for each, conc at a time. ttl is the tokens' lifetime in seconds.
func registerClients(ctx context.Context, hc *http.Client, name string, is issuer, prefix string, n, ttl, conc int) ([]idpClient, error) {
	out := make([]idpClient, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range max(1, conc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("%s-%d", prefix, i)
				tok, err := registerOne(ctx, hc, is, id, ttl)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("client %s at %s: %w", id, name, err)
					}
					mu.Unlock()
					return
				}
				out[i] = idpClient{ID: id, Subject: subjectOf(name, id), Token: tok}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

func registerOne(ctx context.Context, hc *http.Client, is issuer, id string, ttl int) (string, error) {
	reg := map[string]any{
		"client_id": id, "client_secret": "secret-" + id,
		"grant_types": []string{"client_credentials"}, "response_types": []string{}, "redirect_uris": []string{},
		"token_endpoint_auth_method": "client_secret_post", "scope": "items:read", "token_ttl": ttl,
	}
	b, _ := json.Marshal(reg)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, is.RegistrationEndpoint, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("register: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("register: status %d", resp.StatusCode)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"secret-" + id}}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, is.TokenEndpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("token: status %d error %q", resp.StatusCode, out.Error)
	}
	return out.AccessToken, nil
}

// adminAPI sends raw admin requests to Directus for what the bridge's
// client does not do (batch user creation and deletion, role and policy
// removal). Directus error messages are not printed: a duplicate token error
// would echo the token.
type adminAPI struct {
	url, token string
	hc         *http.Client
}

func (a *adminAPI) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var env struct {
			Errors []struct {
				Extensions struct {
					Code string `json:"code"`
				} `json:"extensions"`
			} `json:"errors"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&env)
		code := ""
		if len(env.Errors) > 0 {
			code = env.Errors[0].Extensions.Code
		}
		return fmt.Errorf("%s %s: status %d %s", method, strings.SplitN(path, "?", 2)[0], resp.StatusCode, code)
	}
	if out != nil {
		var env struct{ Data json.RawMessage }
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		return json.Unmarshal(env.Data, out)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// deleteUsers deletes users by id, batch at a time (DELETE /users with an
// array body).
func (a *adminAPI) deleteUsers(ctx context.Context, ids []string, batch int) error {
	for len(ids) > 0 {
		n := min(batch, len(ids))
		if err := a.do(ctx, http.MethodDelete, "/users", ids[:n], nil); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}
