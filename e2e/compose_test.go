package e2e

// The container files are kept honest without a Docker engine: these tests
// load docker-compose.yml with compose-go (the loader of `docker compose`,
// schema validation included) and check it, the Dockerfile and the compose
// configuration of the bridge against the files the e2e suite and CI really
// run: testdata/stack/stack.sh, testdata/stack/directus12/package.json and
// the Makefile. They need no stack and run everywhere.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

const (
	composeFile       = "docker-compose.yml"
	composeBridgeConf = "testdata/compose/bridge.yaml"
	composeInitScript = "testdata/compose/directus-init.mjs"

	// The standby profile: two bridges on one state in the compose
	// PostgreSQL, whose role and database bridge-db-init creates.
	composeStandbyProfile = "standby"
	composeStandbyConf    = "testdata/compose/bridge-standby.yaml"
	composeStandbyInit    = "testdata/compose/bridge-db-init.sh"

	// The replicas profile: two bridges serving at once on one shared
	// state, in the database of the standby profile (bridge-db-init too).
	composeReplicasProfile = "replicas"
	composeReplicasConf    = "testdata/compose/bridge-replicas.yaml"
)

// composeStandbyBridges are the two bridges of the standby profile.
var composeStandbyBridges = []string{"bridge-a", "bridge-b"}

// composeReplicaBridges are the two bridges of the replicas profile.
var composeReplicaBridges = []string{"replica-a", "replica-b"}

// composeDBInit is the one-shot service that creates the database of both
// profiles' state.
const composeDBInit = "bridge-db-init"

// composeStandbyServices are the services of the standby profile, and only
// of it: a plain `docker compose up` starts none of them.
var composeStandbyServices = []string{composeDBInit, "bridge-a", "bridge-b"}

// composeReplicasServices are those of the replicas profile.
var composeReplicasServices = []string{composeDBInit, "replica-a", "replica-b"}

// composeBridgeProfile is one profile of bridges on the PostgreSQL state.
type composeBridgeProfile struct {
	name     string   // the profile
	conf     string   // the bridges' configuration
	bridges  []string // the bridge services
	services []string // every service of the profile
	// healthPath is the bridges' health check: /healthz for the standby
	// pair (a standby is not ready by design), /readyz for replicas (each
	// one serves).
	healthPath string
}

var (
	composeStandby = composeBridgeProfile{
		name: composeStandbyProfile, conf: composeStandbyConf, bridges: composeStandbyBridges,
		services: composeStandbyServices, healthPath: "/healthz",
	}
	composeReplicas = composeBridgeProfile{
		name: composeReplicasProfile, conf: composeReplicasConf, bridges: composeReplicaBridges,
		services: composeReplicasServices, healthPath: "/readyz",
	}
	// composeBridgeProfiles are the profiles of bridges on PostgreSQL.
	composeBridgeProfiles = []composeBridgeProfile{composeStandby, composeReplicas}
)

// composeServices are the services the stack must have.
var composeServices = []string{"postgres", "directus", "directus-init", "idp", "bridge"}

// directusContainerOverrides are the Directus 12 settings whose stack.sh
// value cannot work in a container, with the value the compose file must
// use instead. Every other setting with a fixed value in stack.sh must be
// the same in the compose file.
var directusContainerOverrides = map[string]string{
	"HOST":    "0.0.0.0",  // stack.sh listens on loopback; a container on its network address
	"DB_HOST": "postgres", // the compose service
}

// directusMustMatch are settings the comparison must have found in stack.sh
// with a fixed value: if stack.sh changes shape so that the parser below
// misses them, the test fails instead of comparing nothing.
var directusMustMatch = []string{
	"DB_CLIENT", "DB_DATABASE", "DB_USER", "ADMIN_EMAIL",
	"TELEMETRY_URL", "COMPLIANCE_URL", "PROJECT_OWNER_ENABLED",
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(wd) // go test runs in the package folder, e2e/
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", wd, err)
	}
	return root
}

func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loadCompose loads docker-compose.yml as `docker compose` would from the
// repository root, with only env as the environment (no OS environment and
// no .env file, so that the file's own defaults are what is tested).
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	return loadComposeProfiles(t, nil, env...)
}

// loadComposeProfiles is loadCompose with profiles enabled, as
// `docker compose --profile NAME` loads the file.
func loadComposeProfiles(t *testing.T, profiles []string, env ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, composeFile)},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(env),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%s does not load: %v", composeFile, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("%s: no service %q", composeFile, name)
	}
	return s
}

func envOf(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range s.Environment {
		if v == nil {
			t.Errorf("service %s: %s has no value (it would be taken from the host's environment)", s.Name, k)
			continue
		}
		out[k] = *v
	}
	return out
}

func hasHealthcheck(s types.ServiceConfig) bool {
	return s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 0 && s.HealthCheck.Test[0] != "NONE"
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	for _, name := range composeServices {
		service(t, p, name)
	}
	for _, name := range []string{"postgres", "directus", "idp", "bridge"} {
		if !hasHealthcheck(service(t, p, name)) {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	checkComposeWiring(t, p)
	checkComposeWiring(t, loadComposeProfiles(t, []string{composeStandbyProfile}))
	checkComposeWiring(t, loadComposeProfiles(t, []string{composeReplicasProfile}))
	// Every profile at once: no two services publish one host port.
	checkComposeWiring(t, loadComposeProfiles(t, []string{composeStandbyProfile, composeReplicasProfile}))
	// The services the bridge needs, all of them.
	bridge := service(t, p, "bridge")
	for _, dep := range []string{"directus", "idp", "directus-init"} {
		if _, ok := bridge.DependsOn[dep]; !ok {
			t.Errorf("service bridge does not depend on %s", dep)
		}
	}
	if seed := service(t, p, "directus-init"); seed.Restart != "" && seed.Restart != types.RestartPolicyNo {
		t.Errorf("service directus-init is one-shot: restart %q", seed.Restart)
	}

	// Every variable has a default: `docker compose up` works without an
	// .env file and never takes an empty secret.
	raw := readRepoFile(t, composeFile)
	for _, m := range regexp.MustCompile(`\$\{([^}]*)\}`).FindAllStringSubmatch(raw, -1) {
		if !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*:-.+$`).MatchString(m[1]) {
			t.Errorf("%s: ${%s} has no non-empty default (${NAME:-default})", composeFile, m[1])
		}
	}
	for _, m := range regexp.MustCompile(`\$[A-Za-z_]`).FindAllString(regexp.MustCompile(`\$\{[^}]*\}`).ReplaceAllString(raw, ""), -1) {
		t.Errorf("%s: %q: use ${NAME:-default} (or $$ for a literal $)", composeFile, m)
	}
}

// checkComposeWiring checks every service of p: depends_on waits for health
// (or the end of a one-shot service), and ports are published on loopback,
// each by one service.
func checkComposeWiring(t *testing.T, p *types.Project) {
	t.Helper()
	hostPorts := map[string]string{} // published port -> service
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		for dep, d := range s.DependsOn {
			target := service(t, p, dep)
			want := types.ServiceConditionCompletedSuccessfully // one-shot services
			if hasHealthcheck(target) {
				want = types.ServiceConditionHealthy
			}
			if d.Condition != want {
				t.Errorf("service %s: depends_on %s has condition %q, want %q", name, dep, d.Condition, want)
			}
		}
		// A development stack with placeholder secrets: published on loopback only.
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("service %s: port %d is published on %q, want 127.0.0.1", name, port.Target, port.HostIP)
			}
			if other, ok := hostPorts[port.Published]; ok {
				t.Errorf("services %s and %s both publish port %s", other, name, port.Published)
			}
			hostPorts[port.Published] = name
		}
	}
}

// TestComposeDirectusMatchesStack: the compose Directus is the version and
// env the e2e suite tests (Directus 12 in testdata/stack/stack.sh).
func TestComposeDirectusMatchesStack(t *testing.T) {
	p := loadCompose(t)
	d := service(t, p, "directus")

	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal([]byte(readRepoFile(t, "testdata/stack/directus12/package.json")), &pkg); err != nil {
		t.Fatal(err)
	}
	version := pkg.Dependencies["directus"]
	if version == "" {
		t.Fatal("testdata/stack/directus12/package.json: no directus dependency")
	}
	if want := "directus/directus:" + version; d.Image != want {
		t.Errorf("directus image %q, want %q (the version of testdata/stack/directus12/package.json)", d.Image, want)
	}
	if pg := service(t, p, "postgres"); pg.Image != "postgres:15" {
		t.Errorf("postgres image %q, want postgres:15 (the stack's PostgreSQL)", pg.Image)
	}

	stackEnv := stackDirectus12Env(t, readRepoFile(t, "testdata/stack/stack.sh"))
	for _, k := range directusMustMatch {
		if v, ok := stackEnv[k]; !ok || v.dynamic {
			t.Fatalf("stack.sh: no fixed %s found for Directus 12: the parser in this test no longer understands directus_configure (found %v)", k, stackEnv)
		}
	}
	got := envOf(t, d)
	for k, sv := range stackEnv {
		v, ok := got[k]
		switch {
		case !ok:
			t.Errorf("directus env lacks %s (stack.sh sets it)", k)
		case directusContainerOverrides[k] != "":
			if v != directusContainerOverrides[k] {
				t.Errorf("directus env %s=%q, want %q in a container", k, v, directusContainerOverrides[k])
			}
		case sv.dynamic:
			if v == "" {
				t.Errorf("directus env %s is empty", k)
			}
		case v != sv.value:
			t.Errorf("directus env %s=%q, stack.sh sets %q", k, v, sv.value)
		}
	}
	for k := range got {
		if _, ok := stackEnv[k]; !ok {
			t.Errorf("directus env sets %s, which the e2e stack does not (add it to stack.sh too, or remove it)", k)
		}
	}
	if len(got["SECRET"]) < 32 {
		t.Errorf("directus SECRET is %d bytes, Directus wants at least 32", len(got["SECRET"]))
	}
	// The Directus port is the one the bridge configuration uses.
	if u := bridgeConfig(t).Directus.URL; u != "http://directus:"+got["PORT"] {
		t.Errorf("%s: directus.url %q, want http://directus:%s", composeBridgeConf, u, got["PORT"])
	}
}

// TestComposeSecretsShared: the bridge's admin token is Directus's
// ADMIN_TOKEN and Directus's DB password PostgreSQL's, with the defaults and
// when overridden from the environment.
func TestComposeSecretsShared(t *testing.T) {
	for _, env := range [][]string{nil, {"DIRECTUS_ADMIN_TOKEN=override-token", "POSTGRES_PASSWORD=override-pw"}} {
		p := loadCompose(t, env...)
		d := envOf(t, service(t, p, "directus"))
		b := envOf(t, service(t, p, "bridge"))
		pg := envOf(t, service(t, p, "postgres"))
		if d["ADMIN_TOKEN"] == "" || b["DIRECTUS_BRIDGE_DIRECTUS_TOKEN"] != d["ADMIN_TOKEN"] {
			t.Errorf("env %v: bridge token %q, Directus ADMIN_TOKEN %q: want the same, non-empty", env, b["DIRECTUS_BRIDGE_DIRECTUS_TOKEN"], d["ADMIN_TOKEN"])
		}
		if i := envOf(t, service(t, p, "directus-init")); i["DIRECTUS_TOKEN"] != d["ADMIN_TOKEN"] {
			t.Errorf("env %v: directus-init token %q, want Directus ADMIN_TOKEN %q", env, i["DIRECTUS_TOKEN"], d["ADMIN_TOKEN"])
		}
		if d["DB_PASSWORD"] != pg["POSTGRES_PASSWORD"] || d["DB_USER"] != pg["POSTGRES_USER"] || d["DB_DATABASE"] != pg["POSTGRES_DB"] {
			t.Errorf("env %v: Directus DB %s/%s@%s, PostgreSQL %s/%s@%s", env, d["DB_USER"], d["DB_PASSWORD"], d["DB_DATABASE"],
				pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
		}
		if env != nil && (d["ADMIN_TOKEN"] != "override-token" || d["DB_PASSWORD"] != "override-pw") {
			t.Errorf("env %v does not override the secrets: ADMIN_TOKEN %q, DB_PASSWORD %q", env, d["ADMIN_TOKEN"], d["DB_PASSWORD"])
		}
	}
}

// composeBridgeConfig is the part of the bridge's configuration these tests
// look at; `config check` validates the whole file.
type composeBridgeConfig struct {
	Listen   string `yaml:"listen"`
	Directus struct {
		URL      string `yaml:"url"`
		TokenEnv string `yaml:"token_env"`
	} `yaml:"directus"`
	State struct {
		Path string `yaml:"path"`
	} `yaml:"state"`
	Issuers []struct {
		Issuer    string   `yaml:"issuer"`
		Audiences []string `yaml:"audiences"`
	} `yaml:"issuers"`
	Rules []struct {
		Role string `yaml:"role"`
	} `yaml:"rules"`
}

func bridgeConfig(t *testing.T) composeBridgeConfig {
	t.Helper()
	var c composeBridgeConfig
	if err := yaml.Unmarshal([]byte(readRepoFile(t, composeBridgeConf)), &c); err != nil {
		t.Fatalf("%s: %v", composeBridgeConf, err)
	}
	return c
}

// TestComposeBridge: the bridge service runs the Dockerfile's image with the
// configuration in testdata/compose, which is valid and names the compose
// services as the bridge sees them.
func TestComposeBridge(t *testing.T) {
	root := repoRoot(t)
	p := loadCompose(t)
	b := service(t, p, "bridge")
	if b.Build == nil || filepath.Clean(b.Build.Context) != root {
		t.Fatalf("service bridge: want build context %s, got %+v", root, b.Build)
	}
	if df := b.Build.Dockerfile; df != "" && df != "Dockerfile" && df != filepath.Join(root, "Dockerfile") {
		t.Errorf("service bridge: builds %s, want the top-level Dockerfile", df)
	}
	if v := b.Build.Args["VERSION"]; v == nil || *v == "" {
		t.Errorf("service bridge: no VERSION build argument")
	}

	df := parseDockerfile(t, readRepoFile(t, "Dockerfile"))
	configPath := flagValue(df.cmd, "-config")
	if configPath == "" {
		t.Fatalf("Dockerfile CMD %q has no -config", df.cmd)
	}
	cfg := bridgeConfig(t)

	// The configuration is bind-mounted where the image's CMD reads it.
	var confMount, stateMount *types.ServiceVolumeConfig
	for i, v := range b.Volumes {
		switch {
		case v.Target == configPath:
			confMount = &b.Volumes[i]
		case v.Target == path.Dir(cfg.State.Path):
			stateMount = &b.Volumes[i]
		}
	}
	if confMount == nil {
		t.Errorf("service bridge: nothing is mounted at %s (the Dockerfile's -config)", configPath)
	} else {
		if confMount.Type != types.VolumeTypeBind || confMount.Source != filepath.Join(root, composeBridgeConf) || !confMount.ReadOnly {
			t.Errorf("service bridge: %s: want a read-only bind mount of %s, got %+v", configPath, composeBridgeConf, *confMount)
		}
	}
	// The state lives on a named volume (kept across `docker compose down`/up).
	if stateMount == nil || stateMount.Type != types.VolumeTypeVolume {
		t.Errorf("service bridge: the state folder %s (state.path) is not a named volume: %+v", path.Dir(cfg.State.Path), stateMount)
	} else if _, ok := p.Volumes[stateMount.Source]; !ok {
		t.Errorf("service bridge: volume %q is not declared", stateMount.Source)
	}
	if df.stateDir != path.Dir(cfg.State.Path) {
		t.Errorf("the Dockerfile prepares %q for the nonroot user, state.path is in %q", df.stateDir, path.Dir(cfg.State.Path))
	}

	// It listens where the port is published and the image says.
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil || host == "127.0.0.1" || host == "localhost" {
		t.Errorf("%s: listen %q: in a container it must not be loopback", composeBridgeConf, cfg.Listen)
	}
	if port != df.expose {
		t.Errorf("%s: listen port %s, the Dockerfile EXPOSEs %s", composeBridgeConf, port, df.expose)
	}
	if len(b.Ports) != 1 || fmt.Sprint(b.Ports[0].Target) != port {
		t.Errorf("service bridge: ports %+v, want the listen port %s", b.Ports, port)
	}

	// The issuers are reached by compose service names: the idp service,
	// started with the host and port of the issuer URLs (the iss the bridge
	// trusts is the one the IdP writes into its tokens).
	idp := service(t, p, "idp")
	idpCmd := strings.Join(idp.Command, " ")
	for _, is := range cfg.Issuers {
		u, err := url.Parse(is.Issuer)
		if err != nil {
			t.Errorf("%s: issuer %q: %v", composeBridgeConf, is.Issuer, err)
			continue
		}
		if u.Hostname() != "idp" || !strings.Contains(idpCmd, "--host idp --port "+u.Port()) {
			t.Errorf("%s: issuer %q: want http://idp:PORT/..., with the idp service started with --host idp --port PORT (command %q)",
				composeBridgeConf, is.Issuer, idpCmd)
		}
		if !slices.Contains(is.Audiences, "https://directus-bridge.test/api") {
			t.Errorf("%s: issuer %q does not accept the IdP's audience https://directus-bridge.test/api", composeBridgeConf, is.Issuer)
		}
	}
	if idp.Hostname != "idp" {
		t.Errorf("service idp: hostname %q, want idp (its issuer host)", idp.Hostname)
	}
	idpSrc := filepath.Join(root, "testdata/stack/idp")
	foundSrc := false
	for _, v := range idp.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == idpSrc && v.ReadOnly {
			foundSrc = true
		}
	}
	if !foundSrc {
		t.Errorf("service idp: testdata/stack/idp is not mounted read-only")
	}

	// The role of every rule is one that directus-init creates.
	m := regexp.MustCompile(`const ROLE = '([^']+)'`).FindStringSubmatch(readRepoFile(t, composeInitScript))
	if m == nil {
		t.Fatalf("%s: no `const ROLE = '...'`", composeInitScript)
	}
	for _, r := range cfg.Rules {
		if r.Role != "" && r.Role != m[1] {
			t.Errorf("%s: rule role %q is not the role %s creates (%q)", composeBridgeConf, r.Role, composeInitScript, m[1])
		}
	}
	seed := service(t, p, "directus-init")
	if src := filepath.Join(root, composeInitScript); !slices.ContainsFunc(seed.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == src && slices.Contains(seed.Command, v.Target)
	}) {
		t.Errorf("service directus-init does not run %s", composeInitScript)
	}

	// The health check runs the image's binary against the listen port.
	hc := []string{}
	if b.HealthCheck != nil {
		hc = b.HealthCheck.Test
	}
	if len(hc) < 3 || hc[0] != "CMD" || len(df.entrypoint) != 1 || hc[1] != df.entrypoint[0] || hc[2] != "healthcheck" {
		t.Errorf("service bridge: healthcheck %q, want [CMD %s healthcheck ...]", hc, strings.Join(df.entrypoint, " "))
	} else if u, err := url.Parse(flagValue(hc, "-url")); err != nil || u.Hostname() != "127.0.0.1" || u.Port() != port || u.Path != "/readyz" {
		t.Errorf("service bridge: healthcheck -url %q, want http://127.0.0.1:%s/readyz", flagValue(hc, "-url"), port)
	}

	// `directus-bridge config check` accepts the file with the environment
	// the compose file gives the bridge (and nothing else).
	bin := buildBridgeBinary(t)
	check := exec.Command(bin, "config", "check", "-config", filepath.Join(root, composeBridgeConf))
	for k, v := range envOf(t, b) {
		check.Env = append(check.Env, k+"="+v)
	}
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("config check of %s with the bridge service's env: %v\n%s", composeBridgeConf, err, out)
	}
	// and knows the health check's command: a probe of a closed port fails
	// with 1 (unhealthy), not 2 (usage: unknown command or flag).
	if len(hc) >= 3 {
		args := append(slices.Clone(hc[2:]), "-url", "http://127.0.0.1:1/readyz") // the last -url wins
		probe := exec.Command(bin, args...)
		out, err := probe.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("%q against a closed port: %v (want exit status 1)\n%s", probe.Args, err, out)
		}
	}
}

// standbyBridgeConfig is the part of the configuration of the bridges on
// PostgreSQL (standby and replicas profiles) these tests look at.
type standbyBridgeConfig struct {
	Listen string `yaml:"listen"`
	State  struct {
		Driver   string `yaml:"driver"`
		Path     string `yaml:"path"`
		DSNEnv   string `yaml:"dsn_env"`
		KeyEnv   string `yaml:"key_env"`
		KeyFile  string `yaml:"key_file"`
		Standby  bool   `yaml:"standby"`
		Shared   bool   `yaml:"shared"`
		MaxStale string `yaml:"max_stale"`
	} `yaml:"state"`
}

// standbyInit is what testdata/compose/bridge-db-init.sh creates: a role and
// a database of that name, the role's password from an environment variable.
type standbyInit struct {
	role, database, passwordEnv string
}

// parseStandbyInit reads the names the init script creates (ROLE=...,
// DATABASE=...) and the variable its psql takes the password from
// (\getenv password NAME).
func parseStandbyInit(t *testing.T) standbyInit {
	t.Helper()
	src := readRepoFile(t, composeStandbyInit)
	find := func(re string) string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(src)
		if m == nil {
			t.Fatalf("%s: no match for %s: the parser in this test no longer understands the script", composeStandbyInit, re)
		}
		return m[1]
	}
	in := standbyInit{
		role:        find(`(?m)^ROLE=([a-z_][a-z0-9_]*)$`),
		database:    find(`(?m)^DATABASE=([a-z_][a-z0-9_]*)$`),
		passwordEnv: find(`(?m)^\\getenv password ([A-Z_][A-Z0-9_]*)$`),
	}
	// The statements use those variables, not other literals.
	for _, want := range []string{
		`-v role="$ROLE"`, `-v database="$DATABASE"`,
		`ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';`,
		`format('CREATE DATABASE %I OWNER %I', :'database', :'role')`,
		"ON_ERROR_STOP=1",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("%s does not contain %q", composeStandbyInit, want)
		}
	}
	return in
}

func standbyConfig(t *testing.T) (standbyBridgeConfig, composeBridgeConfig) {
	t.Helper()
	return profileConfig(t, composeStandbyConf)
}

// profileConfig reads the configuration conf of a profile's bridges, with
// the bridge's defaults of the environment variables filled in.
func profileConfig(t *testing.T, conf string) (standbyBridgeConfig, composeBridgeConfig) {
	t.Helper()
	raw := readRepoFile(t, conf)
	var sc standbyBridgeConfig
	var c composeBridgeConfig
	if err := yaml.Unmarshal([]byte(raw), &sc); err != nil {
		t.Fatalf("%s: %v", conf, err)
	}
	if err := yaml.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatalf("%s: %v", conf, err)
	}
	if sc.State.DSNEnv == "" {
		sc.State.DSNEnv = "DIRECTUS_BRIDGE_STATE_DSN" // the bridge's defaults
	}
	if sc.State.KeyEnv == "" {
		sc.State.KeyEnv = "DIRECTUS_BRIDGE_STATE_KEY"
	}
	return sc, c
}

// TestComposeStandbyProfile: the standby profile adds two bridges on one
// PostgreSQL state, one holding it and one waiting, and the one-shot
// service that creates its database; without the profile the stack is what
// it was.
func TestComposeStandbyProfile(t *testing.T) {
	sc, _ := checkBridgeProfile(t, composeStandby)
	if !sc.State.Standby || sc.State.Shared {
		t.Errorf("%s: state standby %v, shared %v: want a standby pair (standby true, not shared)", composeStandbyConf, sc.State.Standby, sc.State.Shared)
	}
}

// TestComposeReplicasProfile: the replicas profile adds two bridges that
// serve at once on one shared PostgreSQL state, the state of the standby
// profile (same database, DSN and key), after the same one-shot service
// created its database.
func TestComposeReplicasProfile(t *testing.T) {
	sc, _ := checkBridgeProfile(t, composeReplicas)
	if !sc.State.Shared || sc.State.Standby {
		t.Errorf("%s: state shared %v, standby %v: want replicas (shared true, not standby: the bridge refuses both)", composeReplicasConf, sc.State.Shared, sc.State.Standby)
	}
	if sc.State.MaxStale != "" {
		if d, err := time.ParseDuration(sc.State.MaxStale); err != nil || d <= 0 || d > time.Minute {
			t.Errorf("%s: state.max_stale %q: want a duration above 0 and at most 1m", composeReplicasConf, sc.State.MaxStale)
		}
	}

	// The replicas are the standby pair with another configuration: the
	// same environment (one state, one key, one Directus token), so that
	// moving from one profile to the other keeps every client's token.
	p := loadComposeProfiles(t, []string{composeStandbyProfile, composeReplicasProfile})
	standby := envOf(t, service(t, p, composeStandbyBridges[0]))
	for _, name := range composeReplicaBridges {
		if diff := cmp.Diff(standby, envOf(t, service(t, p, name))); diff != "" {
			t.Errorf("service %s: environment differs from %s's (-%s +%s):\n%s", name, composeStandbyBridges[0], composeStandbyBridges[0], name, diff)
		}
	}
	// One database for both: the profiles' bridges are never configured
	// apart except for their state block's mode.
	ssc, _ := standbyConfig(t)
	if sc.State.Driver != ssc.State.Driver || sc.State.DSNEnv != ssc.State.DSNEnv || sc.State.KeyEnv != ssc.State.KeyEnv {
		t.Errorf("%s and %s: state driver, dsn_env or key_env differ: %+v, %+v", composeReplicasConf, composeStandbyConf, sc.State, ssc.State)
	}
}

// checkBridgeProfile checks a profile of bridges on the PostgreSQL state
// (see TestComposeStandbyProfile) and returns its bridges' configuration.
//
// Not a t.Helper: a failure names the line of the check that failed.
func checkBridgeProfile(t *testing.T, prof composeBridgeProfile) (standbyBridgeConfig, composeBridgeConfig) {
	root := repoRoot(t)

	// Without the profile: exactly the default services, none of the profile's.
	plain := loadCompose(t)
	if got := slices.Sorted(maps.Keys(plain.Services)); !slices.Equal(got, slices.Sorted(slices.Values(composeServices))) {
		t.Errorf("services without a profile: %q, want %q", got, composeServices)
	}
	for _, name := range prof.services {
		if _, ok := plain.Services[name]; ok {
			t.Errorf("service %s runs without --profile %s", name, prof.name)
		}
		if _, ok := plain.DisabledServices[name]; !ok {
			t.Errorf("service %s is not declared (not even disabled)", name)
		}
	}

	p := loadComposeProfiles(t, []string{prof.name})
	for _, name := range composeServices {
		if s := service(t, p, name); len(s.Profiles) != 0 {
			t.Errorf("service %s has profiles %q: the default stack must not change", name, s.Profiles)
		}
	}
	// Exactly the default services and the profile's: the other profile's
	// bridges stay out.
	if got, want := slices.Sorted(maps.Keys(p.Services)), slices.Sorted(slices.Values(slices.Concat(composeServices, prof.services))); !slices.Equal(got, want) {
		t.Errorf("services with --profile %s: %q, want %q", prof.name, got, want)
	}
	for _, name := range prof.services {
		s := service(t, p, name)
		want := []string{prof.name}
		if name == composeDBInit {
			// The database of every profile of bridges on PostgreSQL.
			want = nil
			for _, bp := range composeBridgeProfiles {
				want = append(want, bp.name)
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(s.Profiles)), slices.Sorted(slices.Values(want))) {
			t.Errorf("service %s: profiles %q, want %q", name, s.Profiles, want)
		}
	}

	raw := readRepoFile(t, prof.conf)
	sc, cfg := profileConfig(t, prof.conf)
	if sc.State.Driver != "postgres" || sc.State.Path != "" || sc.State.KeyFile != "" {
		t.Errorf("%s: state %+v, want driver postgres, no path and no key_file (the key comes from the environment, the same for every bridge)",
			prof.conf, sc.State)
	}
	// The DSN holds a password: it comes from the environment, never the file.
	if regexp.MustCompile(`(?i)postgres(ql)?://|password=`).MatchString(raw) {
		t.Errorf("%s holds a DSN: the bridges take it from %s", prof.conf, sc.State.DSNEnv)
	}
	// Everything but the state is the default bridge's configuration.
	var plainDoc, profDoc map[string]any
	if err := yaml.Unmarshal([]byte(readRepoFile(t, composeBridgeConf)), &plainDoc); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(raw), &profDoc); err != nil {
		t.Fatal(err)
	}
	delete(plainDoc, "state")
	delete(profDoc, "state")
	if diff := cmp.Diff(plainDoc, profDoc); diff != "" {
		t.Errorf("%s differs from %s outside state (-%s +%s):\n%s", prof.conf, composeBridgeConf, path.Base(composeBridgeConf), path.Base(prof.conf), diff)
	}

	df := parseDockerfile(t, readRepoFile(t, "Dockerfile"))
	configPath := flagValue(df.cmd, "-config")
	_, listenPort, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		t.Fatalf("%s: listen %q: %v", prof.conf, cfg.Listen, err)
	}

	plainBridge := service(t, p, "bridge")
	var envs []map[string]string
	for _, name := range prof.bridges {
		b := service(t, p, name)
		// The image of the default bridge, built from the same Dockerfile.
		if b.Image != plainBridge.Image {
			t.Errorf("service %s: image %q, want %q (the bridge service's)", name, b.Image, plainBridge.Image)
		}
		if diff := cmp.Diff(plainBridge.Build, b.Build); diff != "" {
			t.Errorf("service %s: build differs from the bridge service's (-bridge +%s):\n%s", name, name, diff)
		}
		// The profile's configuration, where the image's CMD reads it, and
		// no state folder: the state is in PostgreSQL.
		confOK := false
		for _, v := range b.Volumes {
			switch {
			case v.Target == configPath:
				confOK = v.Type == types.VolumeTypeBind && v.Source == filepath.Join(root, prof.conf) && v.ReadOnly
			case v.Type == types.VolumeTypeVolume:
				t.Errorf("service %s: volume %s at %s: the state of a bridge of profile %s is in PostgreSQL, not in a volume", name, v.Source, v.Target, prof.name)
			}
		}
		if !confOK {
			t.Errorf("service %s: want a read-only bind mount of %s at %s, got %+v", name, prof.conf, configPath, b.Volumes)
		}
		// One port each, on the listen port (checkComposeWiring checks that
		// no two services publish the same host port).
		if len(b.Ports) != 1 || fmt.Sprint(b.Ports[0].Target) != listenPort {
			t.Errorf("service %s: ports %+v, want one, to the listen port %s", name, b.Ports, listenPort)
		}
		if b.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("service %s: restart %q, want %s (a bridge whose state was taken over exits; started again it rejoins)",
				name, b.Restart, types.RestartPolicyUnlessStopped)
		}
		// It waits for what the default bridge waits for, and for its
		// database to be created (the one-shot service completed).
		for _, dep := range []string{"directus", "idp", "directus-init", composeDBInit} {
			if _, ok := b.DependsOn[dep]; !ok {
				t.Errorf("service %s does not depend on %s", name, dep)
			}
		}
		if d := b.DependsOn[composeDBInit]; d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("service %s: depends_on %s with condition %q, want %s (the database exists before the bridge starts)",
				name, composeDBInit, d.Condition, types.ServiceConditionCompletedSuccessfully)
		}
		// Never on another bridge, even indirectly: `docker compose
		// --profile NAME up BRIDGE...` must be able to leave the others out
		// (one bridge state per Directus).
		seen := map[string]bool{}
		var walk func(string)
		walk = func(n string) {
			for dep := range service(t, p, n).DependsOn {
				if !seen[dep] {
					seen[dep] = true
					walk(dep)
				}
			}
		}
		walk(name)
		for dep := range seen {
			if dep == "bridge" || slices.Contains(composeStandbyBridges, dep) || slices.Contains(composeReplicaBridges, dep) {
				t.Errorf("service %s depends on %s: the bridges of profile %s must start without the other bridges", name, dep, prof.name)
			}
		}
		hc := []string{}
		if b.HealthCheck != nil {
			hc = b.HealthCheck.Test
		}
		if len(hc) < 3 || hc[0] != "CMD" || len(df.entrypoint) != 1 || hc[1] != df.entrypoint[0] || hc[2] != "healthcheck" {
			t.Errorf("service %s: healthcheck %q, want [CMD %s healthcheck ...]", name, hc, strings.Join(df.entrypoint, " "))
		} else if u, err := url.Parse(flagValue(hc, "-url")); err != nil || u.Hostname() != "127.0.0.1" || u.Port() != listenPort || u.Path != prof.healthPath {
			t.Errorf("service %s: healthcheck -url %q, want http://127.0.0.1:%s%s", name, flagValue(hc, "-url"), listenPort, prof.healthPath)
		}
		envs = append(envs, envOf(t, b))
	}
	// All on one state: the same environment (DSN, key, Directus token).
	for i := 1; i < len(envs); i++ {
		if diff := cmp.Diff(envs[0], envs[i]); diff != "" {
			t.Errorf("services %s and %s have different environments (-%s +%s):\n%s",
				prof.bridges[0], prof.bridges[i], prof.bridges[0], prof.bridges[i], diff)
		}
	}
	if envs[0][sc.State.DSNEnv] == "" {
		t.Errorf("service %s: no %s (state.dsn_env): the bridges have no DSN", prof.bridges[0], sc.State.DSNEnv)
	}

	dbInit := service(t, p, composeDBInit)
	if dbInit.Image != service(t, p, "postgres").Image {
		t.Errorf("service %s: image %q, want the postgres service's (its psql)", composeDBInit, dbInit.Image)
	}
	if dbInit.Restart != "" && dbInit.Restart != types.RestartPolicyNo {
		t.Errorf("service %s is one-shot: restart %q", composeDBInit, dbInit.Restart)
	}
	if hasHealthcheck(dbInit) {
		t.Errorf("service %s is one-shot: it must not have a healthcheck (the bridges wait for it to complete)", composeDBInit)
	}
	if d, ok := dbInit.DependsOn["postgres"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("service %s: depends_on postgres %+v, want service_healthy", composeDBInit, dbInit.DependsOn)
	}
	if src := filepath.Join(root, composeStandbyInit); !slices.ContainsFunc(dbInit.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeBind && v.Source == src && v.ReadOnly && slices.Contains(dbInit.Command, v.Target)
	}) {
		t.Errorf("service %s does not run %s (mounted read-only): volumes %+v, command %q", composeDBInit, composeStandbyInit, dbInit.Volumes, dbInit.Command)
	}

	// config check accepts the file with the environment the compose file
	// gives the bridges (and nothing else).
	bin := buildBridgeBinary(t)
	check := exec.Command(bin, "config", "check", "-config", filepath.Join(root, prof.conf))
	for k, v := range envs[0] {
		check.Env = append(check.Env, k+"="+v)
	}
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("config check of %s with the %s service's env: %v\n%s", prof.conf, prof.bridges[0], err, out)
	}
	return sc, cfg
}

// TestComposeStandbySecrets: the DSN of the bridges of the standby and
// replicas profiles names the role and database bridge-db-init creates,
// with the password it sets, and all share one state key; with the
// defaults and when overridden.
func TestComposeStandbySecrets(t *testing.T) {
	for _, prof := range composeBridgeProfiles {
		t.Run(prof.name, func(t *testing.T) { checkProfileSecrets(t, prof) })
	}
}

func checkProfileSecrets(t *testing.T, prof composeBridgeProfile) {
	sc, _ := profileConfig(t, prof.conf)
	in := parseStandbyInit(t)
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for _, env := range [][]string{nil, {"DIRECTUS_BRIDGE_DB_PASSWORD=override-pw", "DIRECTUS_BRIDGE_STATE_KEY=" + key, "POSTGRES_PASSWORD=override-root"}} {
		p := loadComposeProfiles(t, []string{prof.name}, env...)
		pg := envOf(t, service(t, p, "postgres"))
		dbInit := envOf(t, service(t, p, composeDBInit))
		d := envOf(t, service(t, p, "directus"))

		// bridge-db-init logs in as the superuser of the postgres service.
		if dbInit["PGHOST"] != "postgres" || dbInit["PGUSER"] != pg["POSTGRES_USER"] || dbInit["PGPASSWORD"] != pg["POSTGRES_PASSWORD"] || dbInit["PGDATABASE"] == "" {
			t.Errorf("env %v: bridge-db-init connects as %s@%s/%s with password %q, want %s@postgres with POSTGRES_PASSWORD %q",
				env, dbInit["PGUSER"], dbInit["PGHOST"], dbInit["PGDATABASE"], dbInit["PGPASSWORD"], pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
		}
		password := dbInit[in.passwordEnv]
		if password == "" || password == pg["POSTGRES_PASSWORD"] {
			t.Errorf("env %v: bridge-db-init: %s is %q: want a password of its own", env, in.passwordEnv, password)
		}

		for _, name := range prof.bridges {
			b := envOf(t, service(t, p, name))
			dsn := b[sc.State.DSNEnv]
			u, err := url.Parse(dsn)
			if err != nil {
				t.Errorf("env %v: service %s: %s does not parse as a URL", env, name, sc.State.DSNEnv)
				continue
			}
			pw, _ := u.User.Password()
			if u.Scheme != "postgres" || u.Hostname() != "postgres" || u.Port() != "5432" {
				t.Errorf("env %v: service %s: DSN %s://%s, want postgres://...@postgres:5432", env, name, u.Scheme, u.Host)
			}
			if db := strings.TrimPrefix(u.Path, "/"); u.User.Username() != in.role || db != in.database {
				t.Errorf("env %v: service %s: DSN role %q database %q, %s creates %q and %q",
					env, name, u.User.Username(), db, composeStandbyInit, in.role, in.database)
			}
			if pw != password {
				t.Errorf("env %v: service %s: the DSN's password is not the %s that bridge-db-init sets", env, name, in.passwordEnv)
			}
			if got := u.Query().Get("sslmode"); got != "disable" {
				t.Errorf("env %v: service %s: sslmode %q, want disable (the compose postgres has no TLS)", env, name, got)
			}
			keys, err := bridge.LoadKeys(b[sc.State.KeyEnv], "")
			if err != nil || len(keys) != 1 {
				t.Errorf("env %v: service %s: %s: %d keys, %v; want one key", env, name, sc.State.KeyEnv, len(keys), err)
			}
			if b["DIRECTUS_BRIDGE_DIRECTUS_TOKEN"] != d["ADMIN_TOKEN"] {
				t.Errorf("env %v: service %s: Directus token is not Directus's ADMIN_TOKEN", env, name)
			}
			if env != nil && (pw != "override-pw" || b[sc.State.KeyEnv] != key) {
				t.Errorf("env %v: service %s: the overrides do not apply (DSN password or state key)", env, name)
			}
		}
	}
}

// buildBridgeBinary builds cmd/directus-bridge into a temporary folder.
func buildBridgeBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "directus-bridge")
	build := exec.Command("go", "build", "-o", bin, "./cmd/directus-bridge")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// dockerfile is what the tests read from the Dockerfile.
type dockerfile struct {
	builderImage string            // FROM of the stage that runs go build
	finalImage   string            // last FROM
	args         map[string]string // ARG NAME=default of the builder stage
	buildRun     string            // the RUN command holding `go build`, flags stripped
	user         string
	expose       string
	entrypoint   []string
	cmd          []string
	copies       []string // COPY lines of the final stage
	stateDir     string   // destination of the COPY --chown=65532:65532
}

// parseDockerfile reads the instructions of a Dockerfile (continuation lines
// joined, comments dropped). JSON-form ENTRYPOINT and CMD only.
func parseDockerfile(t *testing.T, src string) dockerfile {
	t.Helper()
	src = strings.ReplaceAll(src, "\\\n", " ")
	d := dockerfile{args: map[string]string{}}
	stage := 0
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			stage++
			d.finalImage = strings.Fields(rest)[0]
			d.copies = nil
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			d.args[k] = v
		case "RUN":
			if strings.Contains(rest, "go build") {
				for strings.HasPrefix(rest, "--") { // RUN --mount=... flags
					_, rest, _ = strings.Cut(rest, " ")
					rest = strings.TrimSpace(rest)
				}
				d.buildRun = rest
				d.builderImage = d.finalImage
			}
		case "USER":
			d.user = rest
		case "EXPOSE":
			d.expose = rest
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Fatalf("Dockerfile: %s is not in JSON form: %s", instr, rest)
			}
			if strings.ToUpper(instr) == "CMD" {
				d.cmd = v
			} else {
				d.entrypoint = v
			}
		case "COPY":
			d.copies = append(d.copies, rest)
			if f := strings.Fields(rest); slices.Contains(f, "--chown=65532:65532") {
				d.stateDir = f[len(f)-1]
			}
		}
	}
	if stage < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, found %d FROM", stage)
	}
	return d
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// makeVars reads the simple variable assignments of a Makefile.
func makeVars(src string) map[string]string {
	vars := map[string]string{}
	re := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|=)\s*(.*)$`)
	for _, line := range strings.Split(src, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			vars[m[1]] = strings.TrimSpace(m[3])
		}
	}
	return vars
}

// makeRecipe returns the prerequisites and recipe lines of target.
func makeRecipe(src, target string) (prereqs []string, recipe []string) {
	lines := strings.Split(src, "\n")
	for i, line := range lines {
		name, deps, ok := strings.Cut(line, ":")
		if !ok || name != target || strings.HasPrefix(deps, "=") {
			continue
		}
		prereqs = strings.Fields(deps)
		for _, r := range lines[i+1:] {
			if !strings.HasPrefix(r, "\t") {
				break
			}
			recipe = append(recipe, strings.TrimSpace(r))
		}
		return prereqs, recipe
	}
	return nil, nil
}

// TestComposeDockerfileMatchesMakefile: the image is built by exactly the
// Makefile's `build` recipe, which CI runs (make test depends on build), so
// the Dockerfile's build command is exercised on every CI run.
func TestComposeDockerfileMatchesMakefile(t *testing.T) {
	mk := readRepoFile(t, "Makefile")
	df := parseDockerfile(t, readRepoFile(t, "Dockerfile"))

	_, recipe := makeRecipe(mk, "build")
	if len(recipe) != 1 {
		t.Fatalf("Makefile: want a one-line build recipe, got %q", recipe)
	}
	// Expand the Makefile's variables; those the Dockerfile takes as build
	// arguments (VERSION) become ${NAME}, as the RUN line writes them.
	vars := makeVars(mk)
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	want := recipe[0]
	for i := 0; ref.MatchString(want); i++ {
		if i == 10 {
			t.Fatalf("Makefile: the build recipe does not expand: %s", want)
		}
		want = ref.ReplaceAllStringFunc(want, func(s string) string {
			name := ref.FindStringSubmatch(s)[1]
			if _, ok := df.args[name]; ok {
				return "${" + name + "}"
			}
			if v, ok := vars[name]; ok {
				return v
			}
			t.Fatalf("Makefile: $(%s) in the build recipe is neither a Makefile variable nor a Dockerfile ARG", name)
			return s
		})
	}
	norm := func(s string) string {
		return strings.Join(strings.Fields(strings.ReplaceAll(s, "$VERSION", "${VERSION}")), " ")
	}
	if norm(df.buildRun) != norm(want) {
		t.Errorf("the Dockerfile's build command differs from the Makefile's build recipe:\nDockerfile: %s\nMakefile:   %s", df.buildRun, want)
	}
	if df.args["VERSION"] != "dev" {
		t.Errorf("Dockerfile: want ARG VERSION=dev in the builder stage, got %q", df.args["VERSION"])
	}

	// CI runs it: .ci/run runs make test, which depends on build.
	if prereqs, _ := makeRecipe(mk, "test"); !slices.Contains(prereqs, "build") {
		t.Errorf("Makefile: test does not depend on build (%q): CI would not build the Dockerfile's command", prereqs)
	}
	if !strings.Contains(readRepoFile(t, ".ci/run"), "make test") {
		t.Errorf(".ci/run does not run make test")
	}

	// The builder's Go is the go.mod's minor version.
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod: no go directive")
	}
	if !strings.HasPrefix(df.builderImage, "golang:"+m[1]+"-") && df.builderImage != "golang:"+m[1] {
		t.Errorf("Dockerfile: builder %q, want golang:%s (go.mod)", df.builderImage, m[1])
	}

	// A static binary on distroless, non-root, run as the image's entry point.
	if df.finalImage != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("Dockerfile: final image %q", df.finalImage)
	}
	if df.user != "nonroot:nonroot" && df.user != "65532:65532" {
		t.Errorf("Dockerfile: USER %q, want nonroot", df.user)
	}
	if !strings.Contains(df.buildRun, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile: the binary is not static (no CGO_ENABLED=0)")
	}
	out := flagValue(strings.Fields(df.buildRun), "-o")
	if len(df.entrypoint) != 1 || !slices.ContainsFunc(df.copies, func(c string) bool {
		f := strings.Fields(c)
		return len(f) >= 3 && strings.HasPrefix(f[0], "--from=") && strings.HasSuffix(f[len(f)-2], "/"+out) && f[len(f)-1] == df.entrypoint[0]
	}) {
		t.Errorf("Dockerfile: ENTRYPOINT %q is not the binary built to %s (final stage copies: %q)", df.entrypoint, out, df.copies)
	}
	if len(df.cmd) == 0 || df.cmd[0] != "serve" {
		t.Errorf("Dockerfile: CMD %q, want serve -config ...", df.cmd)
	}

	// The build context leaves out what the image does not need.
	ignore := readRepoFile(t, ".dockerignore")
	for _, p := range []string{".git", "bin/", "**/node_modules"} {
		if !slices.Contains(strings.Split(ignore, "\n"), p) {
			t.Errorf(".dockerignore lacks %s", p)
		}
	}
}

// stackValue is one setting stack.sh gives Directus: a fixed value, or one
// it computes per run (ports, paths, random secrets).
type stackValue struct {
	value   string
	dynamic bool
}

// stackDirectus12Env reads the environment stack.sh writes for Directus 12:
// the words KEY=value of directus_configure's write_env call and of its
// "$D12" case (database and Directus 12 extras), with the script's top-level
// constants ($ADMIN_EMAIL, $NOWHERE_URL) expanded. STACK_* variables are the
// script's own bookkeeping.
func stackDirectus12Env(t *testing.T, src string) map[string]stackValue {
	t.Helper()
	consts := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)=([^\s$"'()]+)$`).FindAllStringSubmatch(src, -1) {
		consts[m[1]] = m[2]
	}
	fn := between(t, src, "\ndirectus_configure() {", "\n}\n")
	fn = strings.ReplaceAll(fn, "\\\n", " ")
	caseD12 := between(t, fn, `"$D12")`, ";;")
	var writeEnv string
	for _, line := range strings.Split(fn, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "write_env ") {
			writeEnv = line
		}
	}
	if writeEnv == "" {
		t.Fatal("stack.sh: directus_configure has no write_env call")
	}
	env := map[string]stackValue{}
	key := regexp.MustCompile(`^([A-Z][A-Z0-9_]*)=(.*)$`)
	ref := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
	for _, w := range append(shellWords(caseD12), shellWords(writeEnv)...) {
		m := key.FindStringSubmatch(w)
		if m == nil || strings.HasPrefix(m[1], "STACK_") {
			continue
		}
		v := ref.ReplaceAllStringFunc(m[2], func(s string) string {
			if c, ok := consts[ref.FindStringSubmatch(s)[1]]; ok {
				return c
			}
			return s
		})
		env[m[1]] = stackValue{value: v, dynamic: strings.Contains(v, "$")}
	}
	return env
}

func between(t *testing.T, s, start, end string) string {
	t.Helper()
	_, after, ok := strings.Cut(s, start)
	if !ok {
		t.Fatalf("stack.sh: %q not found", start)
	}
	body, _, ok := strings.Cut(after, end)
	if !ok {
		t.Fatalf("stack.sh: no %q after %q", end, start)
	}
	return body
}

// shellWords splits bash source into words, well enough for assignments and
// array literals: double quotes are removed, $(...) is kept whole (quotes
// inside it included), and ( ) outside of $(...) separate words.
func shellWords(s string) []string {
	var words []string
	var cur bytes.Buffer
	inWord, quoted, depth := false, false, 0
	flush := func() {
		if inWord {
			words = append(words, cur.String())
		}
		cur.Reset()
		inWord = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			cur.WriteByte(c)
			switch c {
			case '(':
				depth++
			case ')':
				depth--
			}
		case c == '$' && i+1 < len(s) && s[i+1] == '(':
			cur.WriteString("$(")
			inWord = true
			depth = 1
			i++
		case c == '"':
			quoted = !quoted
			inWord = true
		case quoted:
			cur.WriteByte(c)
		case c == ' ' || c == '\t' || c == '\n' || c == '(' || c == ')':
			flush()
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words
}
