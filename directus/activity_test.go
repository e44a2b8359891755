package directus

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestActivityRequest(t *testing.T) {
	c, rec := serve(t, 200, `{"data":[]}`)
	_, err := c.Activity(t.Context(), ActivityFilter{Collection: CollectionUsers, AfterID: 41,
		ExcludeUser: "f3151e59-ee4e-4a4f-98f4-338cec94b244"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if rec.method != http.MethodGet || rec.path != "/activity" {
		t.Errorf("request: %s %s, want GET /activity", rec.method, rec.path)
	}
	wantQuery := map[string]string{
		"fields": "id,action,collection,item,user,timestamp",
		"sort":   "id",
		"limit":  "100",
		"filter": `{"_and":[{"collection":{"_eq":"directus_users"}},{"id":{"_gt":41}},` +
			`{"_or":[{"user":{"_neq":"f3151e59-ee4e-4a4f-98f4-338cec94b244"}},{"user":{"_null":true}}]}]}`,
	}
	if diff := cmp.Diff(wantQuery, rec.query); diff != "" {
		t.Errorf("query (-want +got):\n%s", diff)
	}

	if _, err := c.Activity(t.Context(), ActivityFilter{}, -1); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.query["filter"]; ok || rec.query["limit"] != "-1" {
		t.Errorf("zero filter: query %v, want no filter and limit -1", rec.query)
	}
}

func TestActivityRefusesNonUUIDUser(t *testing.T) {
	c, rec := serve(t, 200, `{"data":[]}`)
	if _, err := c.Activity(t.Context(), ActivityFilter{ExcludeUser: "bridge"}, 10); err == nil {
		t.Error("ExcludeUser \"bridge\": no error")
	}
	if rec.method != "" {
		t.Errorf("sent %s %s; PostgreSQL would have failed it with a 500", rec.method, rec.path)
	}
}

func TestActivityDecoding(t *testing.T) {
	at := time.Date(2026, 12, 1, 20, 15, 48, 710e6, time.UTC)
	for _, tc := range []struct {
		name string
		row  string
		want Activity
	}{
		{
			name: "PostgreSQL",
			row:  `{"id":12,"action":"update","collection":"directus_users","item":"e0c13f19-631f-410c-b84c-620d551d2752","user":"f3151e59-ee4e-4a4f-98f4-338cec94b244","timestamp":"2026-12-01T20:15:48.710Z"}`,
			want: Activity{ID: 12, Action: ActionUpdate, Collection: CollectionUsers, Item: "e0c13f19-631f-410c-b84c-620d551d2752", User: "f3151e59-ee4e-4a4f-98f4-338cec94b244", Timestamp: at},
		},
		{
			name: "string id, no zone, no user",
			row:  `{"id":"12","action":"delete","collection":"directus_users","item":"x","user":null,"timestamp":"2026-12-01 20:15:48.710"}`,
			want: Activity{ID: 12, Action: ActionDelete, Collection: CollectionUsers, Item: "x", Timestamp: at},
		},
		{
			name: "numeric item, offset zone",
			row:  `{"id":9007199254740993,"action":"create","collection":"articles","item":7,"user":"u","timestamp":"2026-12-01T21:15:48.71+01:00"}`,
			want: Activity{ID: 9007199254740993, Action: ActionCreate, Collection: "articles", Item: "7", User: "u", Timestamp: at},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := serve(t, 200, `{"data":[`+tc.row+`]}`)
			got, err := c.Activity(t.Context(), ActivityFilter{}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]Activity{tc.want}, got); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestActivityMalformedID(t *testing.T) {
	c, _ := serve(t, 200, `{"data":[{"id":"twelve","action":"update"}]}`)
	_, err := c.Activity(t.Context(), ActivityFilter{}, 1)
	if Code(err) != CodeMalformed {
		t.Errorf("got %v, want %s", err, CodeMalformed)
	}
}

func TestLastActivityID(t *testing.T) {
	c, rec := serve(t, 200, `{"data":[{"id":57}]}`)
	id, err := c.LastActivityID(t.Context(), CollectionUsers)
	if err != nil || id != 57 {
		t.Fatalf("LastActivityID: %d, %v; want 57", id, err)
	}
	want := map[string]string{"fields": "id", "sort": "-id", "limit": "1",
		"filter": `{"_and":[{"collection":{"_eq":"directus_users"}}]}`}
	if diff := cmp.Diff(want, rec.query); diff != "" {
		t.Errorf("query (-want +got):\n%s", diff)
	}

	c, _ = serve(t, 200, `{"data":[]}`)
	if id, err := c.LastActivityID(t.Context(), ""); err != nil || id != 0 {
		t.Errorf("no activity: %d, %v; want 0", id, err)
	}
}
