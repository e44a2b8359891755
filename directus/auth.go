package directus

import (
	"context"
	"fmt"
	"net/http"
)

// AccessFlags are the admin and app access a user holds through all its
// policies (its own, its role's and the role's ancestors').
type AccessFlags struct {
	AdminAccess bool `json:"admin_access"`
	AppAccess   bool `json:"app_access"`
}

// MyAccess reads what the client's token may do (GET /policies/me/globals,
// Directus 11 and later). Unlike Me it answers for users without app
// access too, so it tells an administrator's token from any other; a bad
// token fails with INVALID_CREDENTIALS.
func (c *Client) MyAccess(ctx context.Context) (AccessFlags, error) {
	var out AccessFlags
	if err := c.do(ctx, request{op: "my_access", method: http.MethodGet, path: "/policies/me/globals", out: &out}); err != nil {
		return AccessFlags{}, fmt.Errorf("directus: my access: %w", err)
	}
	return out, nil
}

// Login exchanges an email and password for a short-lived access token
// (POST /auth/login, JSON mode); a client for it is New(url, token, o).
// Wrong credentials fail with INVALID_CREDENTIALS. The password never
// appears in an error.
func (c *Client) Login(ctx context.Context, email, password string) (accessToken string, err error) {
	var out struct {
		AccessToken string `json:"access_token"`
	}
	err = c.do(ctx, request{op: "login", method: http.MethodPost, path: "/auth/login",
		body: map[string]string{"email": email, "password": password}, out: &out, secrets: []string{password}})
	if err != nil {
		return "", fmt.Errorf("directus: login: %w", err)
	}
	if out.AccessToken == "" {
		return "", fmt.Errorf("directus: login: %w", &APIError{Op: "login", Status: http.StatusOK, Code: CodeMalformed, Message: "no access token in the answer"})
	}
	return out.AccessToken, nil
}
