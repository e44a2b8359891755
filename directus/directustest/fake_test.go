package directustest_test

import (
	"testing"

	"github.com/directus-bridge/directus-bridge/directus/conformance"
	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version string
		major   int
	}{
		{name: "v12", version: "12.4.0", major: 12},
		{name: "v11", version: "11.17.4", major: 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := directustest.NewServer(t, directustest.Options{Version: tc.version})
			conformance.Run(t, conformance.Target{URL: s.URL, AdminToken: s.AdminToken, Major: tc.major})
		})
	}
}
