package conformance

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/directus"
)

// row is the part of an activity row the test predicts.
type row struct{ Action, Item, User string }

// activityOfUserWrites pins the directus_activity rows that user writes
// leave: one per item and write, the writer's user id, ids ascending, none
// for reads. The suite's tests run one after the other, so no other writer
// interleaves with this one.
func (s *suite) activityOfUserWrites(t *testing.T) {
	ctx := t.Context()
	me, err := s.admin.Me(ctx)
	if err != nil {
		t.Fatalf("Me: %v", err)
	}
	human, humanID := s.newAdmin(t)
	start, err := s.admin.LastActivityID(ctx, directus.CollectionUsers)
	if err != nil {
		t.Fatalf("LastActivityID: %v", err)
	}
	since := time.Now().Add(-time.Minute) // Directus may run on another clock

	u, v := s.newUser(t), s.newUser(t)
	s.create(t, u)
	s.create(t, v)
	if err := s.updateErr(ctx, u.ID, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatal(err)
	}
	missing := uuid.NewString()
	batch := []string{v.ID, missing, u.ID}
	if err := s.admin.UpdateUsers(ctx, batch, directus.UserChange{Status: directus.Ptr("active")}); err != nil {
		t.Fatal(err)
	}
	if _, err := human.UpdateUser(ctx, u.ID, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		t.Fatalf("UpdateUser as another admin: %v", err)
	}
	if err := s.updateErr(ctx, missing, directus.UserChange{Status: directus.Ptr("active")}); !errors.Is(err, directus.ErrNotFound) {
		t.Fatalf("UpdateUser(missing): got %v, want ErrNotFound", err)
	}
	if err := s.admin.DeleteUsers(ctx, []string{v.ID, u.ID}); err != nil {
		t.Fatal(err)
	}

	all, err := s.admin.Activity(ctx, directus.ActivityFilter{Collection: directus.CollectionUsers, AfterID: start}, -1)
	if err != nil {
		t.Fatalf("Activity: %v", err)
	}
	sorted := append([]string(nil), batch...)
	sort.Strings(sorted)
	want := []row{
		{directus.ActionCreate, u.ID, me.ID},
		{directus.ActionCreate, v.ID, me.ID},
		{directus.ActionUpdate, u.ID, me.ID},
		// A batch logs every key, existing or not, in key order.
		{directus.ActionUpdate, sorted[0], me.ID},
		{directus.ActionUpdate, sorted[1], me.ID},
		{directus.ActionUpdate, sorted[2], me.ID},
		{directus.ActionUpdate, u.ID, humanID},
		// A PATCH of a missing user is logged although it answers 204.
		{directus.ActionUpdate, missing, me.ID},
		// A batch DELETE logs every id in the order sent.
		{directus.ActionDelete, v.ID, me.ID},
		{directus.ActionDelete, u.ID, me.ID},
	}
	ours := map[string]bool{u.ID: true, v.ID: true, missing: true}
	var got []row
	last := start
	for _, a := range all {
		if a.ID <= last {
			t.Errorf("activity ids not ascending after %d: %d", last, a.ID)
		}
		last = a.ID
		if a.Collection != directus.CollectionUsers {
			t.Errorf("row %d: collection %q, want %s", a.ID, a.Collection, directus.CollectionUsers)
		}
		if a.Timestamp.Before(since) || a.Timestamp.After(time.Now().Add(time.Minute)) {
			t.Errorf("row %d: timestamp %v, want about now", a.ID, a.Timestamp)
		}
		if ours[a.Item] {
			got = append(got, row{a.Action, a.Item, a.User})
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("activity of the user writes (-want +got):\n%s", diff)
	}
	if len(all) < len(want) {
		t.Fatalf("only %d activity rows", len(all))
	}

	// ExcludeUser leaves the other admin's write.
	others, err := s.admin.Activity(ctx, directus.ActivityFilter{Collection: directus.CollectionUsers, AfterID: start, ExcludeUser: me.ID}, -1)
	if err != nil {
		t.Fatalf("Activity(ExcludeUser): %v", err)
	}
	got = nil
	for _, a := range others {
		if ours[a.Item] {
			got = append(got, row{a.Action, a.Item, a.User})
		}
	}
	if diff := cmp.Diff([]row{{directus.ActionUpdate, u.ID, humanID}}, got); diff != "" {
		t.Errorf("activity without the bridge's rows (-want +got):\n%s", diff)
	}

	// Item keeps one user's rows, and combines with ExcludeUser.
	byItem, err := s.admin.Activity(ctx, directus.ActivityFilter{Collection: directus.CollectionUsers, AfterID: start, Item: u.ID, ExcludeUser: me.ID}, -1)
	if err != nil {
		t.Fatalf("Activity(Item): %v", err)
	}
	got = nil
	for _, a := range byItem {
		got = append(got, row{a.Action, a.Item, a.User})
	}
	if diff := cmp.Diff([]row{{directus.ActionUpdate, u.ID, humanID}}, got); diff != "" {
		t.Errorf("activity of one item without the bridge's rows (-want +got):\n%s", diff)
	}

	// AfterID and limit page through the same rows.
	page, err := s.admin.Activity(ctx, directus.ActivityFilter{Collection: directus.CollectionUsers, AfterID: all[2].ID}, 2)
	if err != nil {
		t.Fatalf("Activity(AfterID, limit 2): %v", err)
	}
	if diff := cmp.Diff(all[3:5], page); diff != "" {
		t.Errorf("page after row %d (-want +got):\n%s", all[2].ID, diff)
	}
	lastID, err := s.admin.LastActivityID(ctx, directus.CollectionUsers)
	if err != nil || lastID != all[len(all)-1].ID {
		t.Errorf("LastActivityID: %d, %v; want %d", lastID, err, all[len(all)-1].ID)
	}
	if id, err := s.admin.LastActivityID(ctx, "conformance_no_such_collection_"+random()); err != nil || id != 0 {
		t.Errorf("LastActivityID of a collection without activity: %d, %v; want 0", id, err)
	}

	// Reads write nothing.
	before, err := s.admin.LastActivityID(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.admin.User(ctx, u.ID)
	_, _ = s.admin.ListUsers(ctx, directus.UserFilter{HasExternalIdentifier: true}, 5, 0)
	_, _ = s.admin.Me(ctx)
	_, _ = human.Me(ctx)
	_, _ = s.admin.Roles(ctx)
	_, _ = s.admin.Policies(ctx)
	_, _ = s.admin.ServerInfo(ctx)
	_ = s.admin.Ping(ctx)
	_, _ = s.admin.Activity(ctx, directus.ActivityFilter{AfterID: before}, 10)
	after, err := s.admin.LastActivityID(ctx, "")
	if err != nil || after != before {
		t.Errorf("reads wrote activity: last id %d before, %d after (%v)", before, after, err)
	}
}

// accessRows: a policy attached to a user through /access directly shows on
// the user, is logged under directus_access only (not directus_users), and
// its row names the user.
func (s *suite) accessRows(t *testing.T) {
	ctx := t.Context()
	u := s.newUser(t)
	s.create(t, u)
	p, err := s.admin.CreatePolicy(ctx, directus.Policy{Name: "conformance-access-" + random()})
	if err != nil {
		t.Fatal(err)
	}
	start, err := s.admin.LastActivityID(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.admin.AttachPolicy(ctx, u.ID, p.ID)
	if err != nil {
		t.Fatalf("AttachPolicy: %v", err)
	}
	if got := s.read(t, u.ID).PolicyIDs(); len(got) != 1 || got[0] != p.ID {
		t.Errorf("user policies after POST /access: %v, want [%s]", got, p.ID)
	}
	users, err := s.admin.AccessUsers(ctx, []string{id, uuid.NewString()})
	if err != nil || len(users) != 1 || users[id] != u.ID {
		t.Errorf("AccessUsers = %v, %v; want {%s: %s}", users, err, id, u.ID)
	}
	if err := s.admin.DeleteAccess(ctx, id); err != nil {
		t.Fatalf("DeleteAccess: %v", err)
	}
	if got := s.read(t, u.ID).PolicyIDs(); len(got) != 0 {
		t.Errorf("user policies after DELETE /access: %v, want none", got)
	}
	rows, err := s.admin.Activity(ctx, directus.ActivityFilter{AfterID: start,
		Collections: []string{directus.CollectionUsers, directus.CollectionAccess}}, -1)
	if err != nil {
		t.Fatalf("Activity: %v", err)
	}
	type row struct{ Action, Collection, Item string }
	var got []row
	for _, a := range rows {
		if a.Item == id || a.Item == u.ID {
			got = append(got, row{a.Action, a.Collection, a.Item})
		}
	}
	want := []row{{directus.ActionCreate, directus.CollectionAccess, id}, {directus.ActionDelete, directus.CollectionAccess, id}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("activity of /access writes (-want +got):\n%s", diff)
	}
}
