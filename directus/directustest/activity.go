package directustest

import (
	"net/http"
	"sort"
	"strings"
	"time"
)

// activityRow is a directus_activity row.
type activityRow struct {
	ID         int64
	Action     string
	Collection string
	Item       string
	User       *string
	Timestamp  time.Time
}

// activityFilterFields are the fields GET /activity can filter on.
var activityFilterFields = map[string]fieldKind{
	"id": kindInt, "action": kindString, "collection": kindString, "item": kindString,
	"user": kindString, "timestamp": kindString,
}

func (a *activityRow) field(name string) any {
	switch name {
	case "id":
		return a.ID
	case "action":
		return a.Action
	case "collection":
		return a.Collection
	case "item":
		return a.Item
	case "user":
		if a.User == nil {
			return nil
		}
		return *a.User
	case "timestamp":
		return a.Timestamp.Format("2006-01-02T15:04:05.000Z")
	}
	return nil
}

// logActivity records one write the way Directus does: one row per item,
// with the id of the user whose token made the request.
func (s *Server) logActivity(caller *userRow, action, collection, item string) {
	uid := caller.ID
	s.activity = append(s.activity, activityRow{
		ID: int64(len(s.activity)) + 1, Action: action, Collection: collection, Item: item,
		User: &uid, Timestamp: s.now().UTC(),
	})
}

// activityColumns are the columns the fake renders; "*" is all of them.
var activityColumns = []string{"id", "action", "user", "timestamp", "ip", "user_agent", "collection", "item", "origin"}

func (s *Server) listActivity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	match, ferr := compileFilter(q.Get("filter"), activityFilterFields)
	if ferr != nil {
		writeError(w, ferr)
		return
	}
	limit, offset, lerr := paging(r)
	if lerr != nil {
		writeError(w, lerr)
		return
	}
	fields := activityColumns
	if f := q.Get("fields"); f != "" && f != "*" {
		fields = strings.Split(f, ",")
		for _, name := range fields {
			known := false
			for _, c := range activityColumns {
				known = known || c == name
			}
			if !known {
				writeError(w, errForbidden()) // Directus: an unknown field is forbidden
				return
			}
		}
	}
	// Directus 12 without a license shows 30 days of activity.
	var since time.Time
	if s.majorVersion() >= 12 {
		since = s.now().Add(-30 * 24 * time.Hour)
	}
	var rows []*activityRow
	for i := range s.activity {
		a := &s.activity[i]
		if !a.Timestamp.Before(since) && match(a.field) {
			rows = append(rows, a)
		}
	}
	switch q.Get("sort") {
	case "", "id":
	case "-id":
		sort.Slice(rows, func(i, j int) bool { return rows[i].ID > rows[j].ID })
	default:
		writeError(w, invalidQuery("fake: activity sorts by id or -id only"))
		return
	}
	rows = rows[min(offset, len(rows)):]
	if limit >= 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	out := make([]map[string]any, 0, len(rows))
	for _, a := range rows {
		m := map[string]any{}
		for _, f := range fields {
			switch f {
			case "ip":
				m[f] = "127.0.0.1"
			case "user_agent":
				m[f] = r.UserAgent()
			case "origin":
				m[f] = nil
			default:
				m[f] = a.field(f)
			}
		}
		out = append(out, m)
	}
	writeData(w, out)
}
