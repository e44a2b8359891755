package directustest

import (
	"encoding/json"
	"sort"
)

// UserState is the fake's ground truth about one user, for tests that check
// invariants against what Directus holds rather than what a client saw.
type UserState struct {
	ID     string
	Status string
	Role   string // "" when none
	// Token is the raw static token (Directus never shows it), nil when none.
	Token *string
	// Policies are the ids of the policies attached to the user directly,
	// sorted; a policy attached twice appears twice.
	Policies           []string
	ExternalIdentifier string
	// AuthData is the JSON value written to auth_data, compacted; nil when
	// null.
	AuthData json.RawMessage
}

// Snapshot returns every user, admins included, by id.
func (s *Server) Snapshot() map[string]UserState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]UserState, len(s.users))
	for id, u := range s.users {
		st := UserState{ID: id, Status: u.Status, Role: deref(u.Role), ExternalIdentifier: deref(u.ExternalIdentifier)}
		if u.Token != nil {
			tok := *u.Token
			st.Token = &tok
		}
		if u.AuthData != nil {
			st.AuthData = append(json.RawMessage(nil), u.AuthData...)
		}
		for _, a := range s.access {
			if a.User != nil && *a.User == id {
				st.Policies = append(st.Policies, a.Policy)
			}
		}
		sort.Strings(st.Policies)
		out[id] = st
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
