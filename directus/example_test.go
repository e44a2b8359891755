package directus_test

import (
	"context"
	"fmt"
	"log"

	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// Notice what someone other than the bridge changed: start from the newest
// row, then read the rows after it that another user wrote.
func ExampleClient_Activity() {
	fake := directustest.NewServer(nil, directustest.Options{})
	defer fake.Close()
	ctx := context.Background()
	bridge, err := directus.New(fake.URL, fake.AdminToken, directus.Options{})
	if err != nil {
		log.Fatal(err)
	}
	human, err := directus.New(fake.URL, fake.NewAdmin(), directus.Options{})
	if err != nil {
		log.Fatal(err)
	}
	self, err := bridge.Me(ctx)
	if err != nil {
		log.Fatal(err)
	}
	cursor, err := bridge.LastActivityID(ctx, directus.CollectionUsers)
	if err != nil {
		log.Fatal(err)
	}

	const id = "0b7c9a1e-4a62-5c3f-9d0e-2f1a3b4c5d6e"
	if _, err := bridge.CreateUser(ctx, directus.NewUser{ID: id}); err != nil {
		log.Fatal(err)
	}
	if _, err := human.UpdateUser(ctx, id, directus.UserChange{Status: directus.Ptr("suspended")}); err != nil {
		log.Fatal(err)
	}

	rows, err := bridge.Activity(ctx, directus.ActivityFilter{
		Collection: directus.CollectionUsers, AfterID: cursor, ExcludeUser: self.ID}, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rows {
		fmt.Println(r.Action, r.Item)
	}
	// Output: update 0b7c9a1e-4a62-5c3f-9d0e-2f1a3b4c5d6e
}
