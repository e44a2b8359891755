package conformance_test

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/directus-bridge/directus-bridge/directus/conformance"
)

// stackEnv names the stack file that testdata/stack/stack.sh writes (the
// same variable as the e2e suite's).
const stackEnv = "DIRECTUS_BRIDGE_STACK"

// TestReal runs the suite against every real Directus of the test stack,
// without the e2e package: DIRECTUS_BRIDGE_STACK=/path/stack.json go test
// ./directus/conformance. Outside CI it is skipped when the variable is
// unset; in CI (CI set) that is a failure: the real versions must be checked.
func TestReal(t *testing.T) {
	path := os.Getenv(stackEnv)
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal(stackEnv + " is not set: in CI the conformance suite must run against real Directus")
		}
		t.Skip(stackEnv + " is not set (start the stack with testdata/stack/stack.sh up)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stack struct {
		Directus []struct {
			Name       string `json:"name"`
			Version    string `json:"version"`
			URL        string `json:"url"`
			AdminToken string `json:"admin_token"`
		} `json:"directus"`
	}
	if err := json.Unmarshal(b, &stack); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(stack.Directus) == 0 {
		t.Fatalf("%s lists no Directus", path)
	}
	for _, d := range stack.Directus {
		t.Run(d.Name, func(t *testing.T) {
			var major int
			if _, err := fmt.Sscanf(d.Version, "%d", &major); err != nil {
				t.Fatalf("version %q: %v", d.Version, err)
			}
			conformance.Run(t, conformance.Target{URL: d.URL, AdminToken: d.AdminToken, Major: major})
		})
	}
}
