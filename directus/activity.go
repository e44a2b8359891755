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

	"github.com/google/uuid"
)

// Activity actions Directus writes for item writes.
const (
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// CollectionAccess holds the rows that attach policies to users and roles:
// an administrator may attach one to a user through /access directly, which
// Directus logs under this collection only.
const CollectionAccess = "directus_access"

// CollectionUsers is the collection of Directus users, for ActivityFilter.
const CollectionUsers = "directus_users"

// Activity is a directus_activity row.
//
// Directus writes one row per item for every create, update and delete it
// serves, in the same transaction, with Item the item's primary key and User
// the id of the user whose token made the request; a batch writes one row per
// key. It writes a row even for keys that match no item: a PATCH of a missing
// user (answered 204) and every key of a batch PATCH or DELETE, existing or
// not. Reads write none. Writing a user's policies also writes rows for
// directus_access (before the user's row); deleting a user does not.
type Activity struct {
	ID         int64
	Action     string // ActionCreate, ActionUpdate, ActionDelete, or others (e.g. "login")
	Collection string
	Item       string
	User       string // "" when Directus recorded no user
	Timestamp  time.Time
}

// ActivityFilter selects activity rows. Zero fields do not filter.
type ActivityFilter struct {
	Collection string // e.g. CollectionUsers
	AfterID    int64  // rows with a larger id only
	Item       string // rows of this item (e.g. a user id) only
	// Collections keeps rows of any of these collections (with Collection,
	// both must hold).
	Collections []string
	// ExcludeUser leaves out the rows of this user id (a UUID), e.g. the
	// bridge's own writes. Rows without a user are kept.
	ExcludeUser string
}

// activityFields are the fields every activity read asks for.
const activityFields = "id,action,collection,item,user,timestamp"

// activity is the wire form of an activity row. Ids are numbers on
// PostgreSQL and SQLite, but a bigint column would come as a string; items
// are strings, but numeric keys of other collections may not be.
type activity struct {
	ID         flexString `json:"id"`
	Action     string     `json:"action"`
	Collection string     `json:"collection"`
	Item       flexString `json:"item"`
	User       *string    `json:"user"`
	Timestamp  *string    `json:"timestamp"`
}

// flexString accepts a JSON string or number (or null) and keeps its text.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*f = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want a string or a number, got %s", b)
		}
		*f = flexString(n.String())
	}
	return nil
}

func (a activity) toActivity() (Activity, error) {
	id, err := strconv.ParseInt(string(a.ID), 10, 64)
	if err != nil {
		return Activity{}, fmt.Errorf("activity id %q is not an integer", a.ID)
	}
	return Activity{
		ID:         id,
		Action:     a.Action,
		Collection: a.Collection,
		Item:       string(a.Item),
		User:       deref(a.User),
		Timestamp:  parseTime(deref(a.Timestamp)),
	}, nil
}

// json renders the filter in Directus's JSON filter syntax ("" for none).
func (f ActivityFilter) json() string {
	var and []map[string]any
	if f.Collection != "" {
		and = append(and, map[string]any{"collection": map[string]any{"_eq": f.Collection}})
	}
	if f.AfterID > 0 {
		and = append(and, map[string]any{"id": map[string]any{"_gt": f.AfterID}})
	}
	if len(f.Collections) > 0 {
		and = append(and, map[string]any{"collection": map[string]any{"_in": f.Collections}})
	}
	if f.Item != "" {
		and = append(and, map[string]any{"item": map[string]any{"_eq": f.Item}})
	}
	if f.ExcludeUser != "" {
		// _neq alone would also drop rows without a user (SQL: NULL <> x is not true).
		and = append(and, map[string]any{"_or": []any{
			map[string]any{"user": map[string]any{"_neq": f.ExcludeUser}},
			map[string]any{"user": map[string]any{"_null": true}},
		}})
	}
	if len(and) == 0 {
		return ""
	}
	b, _ := json.Marshal(map[string]any{"_and": and})
	return string(b)
}

// Activity returns up to limit activity rows (-1: all) that match f, sorted
// by id ascending. Read with the admin token, it sees every user's rows;
// Directus 12 without a license shows only the last 30 days.
func (c *Client) Activity(ctx context.Context, f ActivityFilter, limit int) ([]Activity, error) {
	if f.ExcludeUser != "" {
		// PostgreSQL fails the whole query (HTTP 500) on a user that is not a UUID.
		if _, err := uuid.Parse(f.ExcludeUser); err != nil {
			return nil, fmt.Errorf("directus: read activity: ExcludeUser %q is not a user id", f.ExcludeUser)
		}
	}
	q := url.Values{
		"fields": {activityFields},
		"sort":   {"id"},
		"limit":  {strconv.Itoa(limit)},
	}
	if filter := f.json(); filter != "" {
		q.Set("filter", filter)
	}
	rows, err := c.activity(ctx, "list_activity", q)
	if err != nil {
		return nil, fmt.Errorf("directus: read activity: %w", err)
	}
	return rows, nil
}

// LastActivityID returns the id of the newest activity row of collection
// ("" for any), or 0 when there is none: a starting point for Activity's
// AfterID that skips the history.
func (c *Client) LastActivityID(ctx context.Context, collection string) (int64, error) {
	q := url.Values{
		"fields": {"id"},
		"sort":   {"-id"},
		"limit":  {"1"},
	}
	if filter := (ActivityFilter{Collection: collection}).json(); filter != "" {
		q.Set("filter", filter)
	}
	rows, err := c.activity(ctx, "last_activity", q)
	if err != nil {
		return 0, fmt.Errorf("directus: read last activity: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	return rows[0].ID, nil
}

func (c *Client) activity(ctx context.Context, op string, q url.Values) ([]Activity, error) {
	var out []activity
	if err := c.do(ctx, request{op: op, method: http.MethodGet, path: "/activity", query: q, out: &out}); err != nil {
		return nil, err
	}
	rows := make([]Activity, len(out))
	for i, a := range out {
		r, err := a.toActivity()
		if err != nil {
			return nil, &APIError{Op: op, Status: http.StatusOK, Code: CodeMalformed, Message: err.Error()}
		}
		rows[i] = r
	}
	return rows, nil
}
