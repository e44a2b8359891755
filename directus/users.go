package directus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// User is a directus_users row as the bridge sees it.
type User struct {
	ID                 string
	Status             string
	Role               string // role id, "" when none
	Provider           string
	ExternalIdentifier string
	FirstName          string
	LastName           string
	Email              string
	LastAccess         time.Time // zero when never set
	HasToken           bool      // Directus conceals the value itself
	Access             []Access  // policies attached to the user directly
	// AuthData is the auth_data JSON value, compacted; nil when null.
	// Directus on PostgreSQL answers the value itself, on SQLite a string
	// holding the JSON text: both read the same here. Only SSO logins
	// (which machine users never do) and a PATCH carrying
	// external_identifier or provider overwrite it.
	AuthData json.RawMessage
}

// PolicyIDs returns the ids of the policies attached to the user directly.
func (u User) PolicyIDs() []string {
	ids := make([]string, 0, len(u.Access))
	for _, a := range u.Access {
		ids = append(ids, a.Policy)
	}
	return ids
}

// Access is a directus_access row that attaches a policy to a user.
type Access struct {
	ID     string `json:"id"`
	Policy string `json:"policy"`
}

// NewUser is a user to create. Empty strings and a zero LastAccess are not sent.
type NewUser struct {
	ID                 string
	Status             string
	Role               string
	Provider           string
	ExternalIdentifier string
	FirstName          string
	LastName           string
	Token              string
	LastAccess         time.Time
	Policies           []string // policy ids to attach
	// Email and Password let the user log in (POST /auth/login); machine
	// users have neither. The password never appears in an error.
	Email    string
	Password string
	// AuthData is written to auth_data when non-nil; it must be valid JSON.
	AuthData json.RawMessage
}

// UserChange lists fields to write; nil fields are left as they are. For Role
// and Token, a pointer to "" writes null.
type UserChange struct {
	Status     *string
	Role       *string
	Token      *string
	LastAccess *time.Time
	// AuthData is written when non-nil (valid JSON; "null" clears it).
	// Directus clears auth_data on any PATCH that carries external_identifier
	// or provider, even one that also carries auth_data: UserChange has
	// neither, so a change never loses the value it writes.
	AuthData     json.RawMessage
	AddPolicies  []string // policy ids to attach
	RemoveAccess []string // access row ids to delete
}

// Empty reports whether the change writes nothing.
func (c UserChange) Empty() bool {
	return c.Status == nil && c.Role == nil && c.Token == nil && c.LastAccess == nil &&
		c.AuthData == nil && len(c.AddPolicies) == 0 && len(c.RemoveAccess) == 0
}

// Ptr returns a pointer to v, for UserChange fields.
func Ptr[T any](v T) *T { return &v }

// UserFilter selects users for ListUsers. Zero fields do not filter.
type UserFilter struct {
	IDs []string // id is one of these
	// HasExternalIdentifier keeps users whose external_identifier is set.
	HasExternalIdentifier bool
	// HasToken keeps users with (true) or without (false) a static token.
	HasToken *bool
	// Role keeps the users of this role (by id).
	Role string
}

// userFields are the fields every user read asks for.
const userFields = "id,status,role,provider,external_identifier,first_name,last_name,email,last_access,token,auth_data,policies.id,policies.policy"

// user is the wire form of a user read.
type user struct {
	ID                 string          `json:"id"`
	Status             string          `json:"status"`
	Role               *string         `json:"role"`
	Provider           string          `json:"provider"`
	ExternalIdentifier *string         `json:"external_identifier"`
	FirstName          *string         `json:"first_name"`
	LastName           *string         `json:"last_name"`
	Email              *string         `json:"email"`
	LastAccess         *string         `json:"last_access"`
	Token              *string         `json:"token"`
	AuthData           json.RawMessage `json:"auth_data"`
	Policies           []Access        `json:"policies"`
}

func (u user) toUser() User {
	return User{
		ID:                 u.ID,
		Status:             u.Status,
		Role:               deref(u.Role),
		Provider:           u.Provider,
		ExternalIdentifier: deref(u.ExternalIdentifier),
		FirstName:          deref(u.FirstName),
		LastName:           deref(u.LastName),
		Email:              deref(u.Email),
		LastAccess:         parseTime(deref(u.LastAccess)),
		HasToken:           u.Token != nil,
		Access:             u.Policies,
		AuthData:           readJSON(u.AuthData),
	}
}

// readJSON normalises a json column as Directus answers it: nil for null,
// the content of a string that holds JSON text (SQLite returns json columns
// as text), compacted.
func readJSON(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] == '"' {
		var text string
		if json.Unmarshal(raw, &text) == nil && json.Valid([]byte(text)) {
			raw = []byte(text)
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return nil // not reachable: raw came out of a JSON decoder
	}
	if b.String() == "null" {
		return nil
	}
	return b.Bytes()
}

// writeJSON checks a JSON value the caller wants written.
func writeJSON(field string, v json.RawMessage) (json.RawMessage, error) {
	if !json.Valid(v) {
		return nil, fmt.Errorf("%s is not valid JSON", field)
	}
	var b bytes.Buffer
	_ = json.Compact(&b, v)
	return b.Bytes(), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// parseTime reads Directus timestamps: PostgreSQL answers with a zone,
// SQLite without one (it stores UTC).
func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// User reads one user by id, or returns ErrNotFound.
func (c *Client) User(ctx context.Context, id string) (User, error) {
	users, err := c.ListUsers(ctx, UserFilter{IDs: []string{id}}, 1, 0)
	if err != nil {
		return User{}, fmt.Errorf("directus: read user: %w", err)
	}
	if len(users) == 0 {
		return User{}, ErrNotFound
	}
	return users[0], nil
}

// ListUsers returns up to limit users (-1: all) that match f, sorted by id,
// skipping the first offset. (Directus has no _gt on uuid fields, so pages
// are by offset.)
func (c *Client) ListUsers(ctx context.Context, f UserFilter, limit, offset int) ([]User, error) {
	q := url.Values{
		"fields": {userFields},
		"sort":   {"id"},
		"limit":  {strconv.Itoa(limit)},
	}
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	if filter := f.json(); filter != "" {
		q.Set("filter", filter)
	}
	var out []user
	if err := c.do(ctx, request{op: "list_users", method: http.MethodGet, path: "/users", query: q, out: &out}); err != nil {
		return nil, err
	}
	users := make([]User, len(out))
	for i, u := range out {
		users[i] = u.toUser()
	}
	return users, nil
}

// json renders the filter in Directus's JSON filter syntax ("" for none).
func (f UserFilter) json() string {
	var and []map[string]any
	if len(f.IDs) == 1 {
		and = append(and, map[string]any{"id": map[string]any{"_eq": f.IDs[0]}})
	} else if len(f.IDs) > 1 {
		and = append(and, map[string]any{"id": map[string]any{"_in": f.IDs}})
	}
	if f.HasExternalIdentifier {
		and = append(and, map[string]any{"external_identifier": map[string]any{"_nnull": true}})
	}
	if f.Role != "" {
		and = append(and, map[string]any{"role": map[string]any{"_eq": f.Role}})
	}
	if f.HasToken != nil {
		op := "_null"
		if *f.HasToken {
			op = "_nnull"
		}
		and = append(and, map[string]any{"token": map[string]any{op: true}})
	}
	if len(and) == 0 {
		return ""
	}
	b, _ := json.Marshal(map[string]any{"_and": and})
	return string(b)
}

// CreateUser creates u and returns it as stored. A user that already has the
// id fails with an error matching ErrConflict.
func (c *Client) CreateUser(ctx context.Context, u NewUser) (User, error) {
	body := map[string]any{"id": u.ID}
	set := func(k, v string) {
		if v != "" {
			body[k] = v
		}
	}
	set("status", u.Status)
	set("role", u.Role)
	set("provider", u.Provider)
	set("external_identifier", u.ExternalIdentifier)
	set("first_name", u.FirstName)
	set("last_name", u.LastName)
	set("token", u.Token)
	set("email", u.Email)
	set("password", u.Password)
	if !u.LastAccess.IsZero() {
		body["last_access"] = formatTime(u.LastAccess)
	}
	if len(u.Policies) > 0 {
		body["policies"] = map[string]any{"create": policyRows(u.Policies), "update": []any{}, "delete": []any{}}
	}
	if u.AuthData != nil {
		v, err := writeJSON("auth_data", u.AuthData)
		if err != nil {
			return User{}, fmt.Errorf("directus: create user: %w", err)
		}
		body["auth_data"] = v
	}
	var out user
	err := c.do(ctx, request{op: "create_user", method: http.MethodPost, path: "/users",
		query: url.Values{"fields": {userFields}}, body: body, out: &out, secrets: []string{u.Token, u.Password}})
	if err != nil {
		return User{}, fmt.Errorf("directus: create user: %w", err)
	}
	return out.toUser(), nil
}

func policyRows(ids []string) []map[string]string {
	rows := make([]map[string]string, len(ids))
	for i, id := range ids {
		rows[i] = map[string]string{"policy": id}
	}
	return rows
}

// body renders the change as a PATCH payload.
func (ch UserChange) body() (map[string]any, error) {
	b := map[string]any{}
	if ch.AuthData != nil {
		v, err := writeJSON("auth_data", ch.AuthData)
		if err != nil {
			return nil, err
		}
		b["auth_data"] = v
	}
	if ch.Status != nil {
		b["status"] = *ch.Status
	}
	nullable := func(k string, v *string) {
		if v == nil {
			return
		}
		if *v == "" {
			b[k] = nil
		} else {
			b[k] = *v
		}
	}
	nullable("role", ch.Role)
	nullable("token", ch.Token)
	if ch.LastAccess != nil {
		b["last_access"] = formatTime(*ch.LastAccess)
	}
	if len(ch.AddPolicies) > 0 || len(ch.RemoveAccess) > 0 {
		del := ch.RemoveAccess
		if del == nil {
			del = []string{}
		}
		b["policies"] = map[string]any{"create": policyRows(ch.AddPolicies), "update": []any{}, "delete": del}
	}
	return b, nil
}

func (ch UserChange) secrets() []string {
	if ch.Token != nil {
		return []string{*ch.Token}
	}
	return nil
}

// UpdateUser applies ch to one user in a single PATCH /users/:id and returns
// the user as stored afterwards. Updating a user that does not exist returns
// ErrNotFound (Directus answers 204 without an item, and logs an update
// activity row for the id all the same). An empty change is an error: it would not tell whether
// the user exists without a request.
func (c *Client) UpdateUser(ctx context.Context, id string, ch UserChange) (User, error) {
	if ch.Empty() {
		return User{}, fmt.Errorf("directus: update user: empty change")
	}
	body, err := ch.body()
	if err != nil {
		return User{}, fmt.Errorf("directus: update user: %w", err)
	}
	var out user
	err = c.do(ctx, request{op: "update_user", method: http.MethodPatch, path: "/users/" + url.PathEscape(id),
		query: url.Values{"fields": {userFields}}, body: body, out: &out, secrets: ch.secrets()})
	if err != nil {
		return User{}, fmt.Errorf("directus: update user: %w", err)
	}
	return out.toUser(), nil
}

// UpdateUsers applies the same change to many users in one PATCH /users.
// Ids of users that do not exist are ignored, as Directus does (it logs an
// update activity row for every id, sorted, existing or not). Policies
// cannot be changed in a batch (access rows differ per user).
func (c *Client) UpdateUsers(ctx context.Context, ids []string, ch UserChange) error {
	if len(ids) == 0 || ch.Empty() {
		return nil
	}
	if len(ch.AddPolicies) > 0 || len(ch.RemoveAccess) > 0 {
		return fmt.Errorf("directus: update users: policies cannot be changed in a batch")
	}
	if ch.Token != nil && *ch.Token != "" && len(ids) > 1 {
		return fmt.Errorf("directus: update users: tokens are unique, a batch can only clear them")
	}
	body, err := ch.body()
	if err != nil {
		return fmt.Errorf("directus: update users: %w", err)
	}
	err = c.do(ctx, request{op: "update_users", method: http.MethodPatch, path: "/users",
		query: url.Values{"fields": {"id"}}, body: map[string]any{"keys": ids, "data": body}, secrets: ch.secrets()})
	if err != nil {
		return fmt.Errorf("directus: update users: %w", err)
	}
	return nil
}

// DeleteUsers deletes users by id in one DELETE /users. Ids of users that do
// not exist are ignored, as Directus does (it still logs a delete activity
// row for each).
func (c *Client) DeleteUsers(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := c.do(ctx, request{op: "delete_users", method: http.MethodDelete, path: "/users", body: ids}); err != nil {
		return fmt.Errorf("directus: delete users: %w", err)
	}
	return nil
}
