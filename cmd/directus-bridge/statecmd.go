package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/pgstate"
)

// stateUsage is the help of "state": both of its commands.
const stateUsage = resealUsage + "\n" + copyUsage + copyExitCodes

const resealUsage = `usage: directus-bridge state reseal [-config FILE]

Rewrites every record of the state that an older state key sealed, sealed
with the first key of the state key variable (state.key_env) or key file
(state.key_file). To rotate the key: put a new key first (the variable or
file holds several, separated by commas or one a line), restart the server
or run this command while it is stopped, then remove the old key. serve
reseals by itself at start, so this command is for a stopped bridge.

exit codes: 0 done, 1 failed (nothing is lost: the old keys still open
what was not rewritten), 2 usage error.
`

func stateCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprint(stdout, stateUsage)
		return 0
	}
	if len(args) > 0 && args[0] == "copy" {
		return stateCopy(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "reseal" {
		fmt.Fprint(stderr, stateUsage)
		return 2
	}
	fs := newFlagSet("state reseal", resealUsage, "", stderr)
	path := configFlag(fs)
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "state reseal", "unexpected argument %q", fs.Arg(0))
	}
	cfg, ok := loadOrReport(*path, stderr, "admin.token_env", "directus.token_env")
	if !ok {
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	store, err := openStore(ctx, cfg, false)
	if errors.Is(err, state.ErrHeld) {
		fmt.Fprintln(stderr, "state reseal: a running server holds the state; it reseals by itself when it starts: restart it")
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "state reseal:", err)
		return 1
	}
	n, err := store.Reseal()
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "state reseal: %v (%d resealed before it)\n", err, n)
		return 1
	}
	noun := "records"
	if n == 1 {
		noun = "record"
	}
	fmt.Fprintf(stdout, "%d %s resealed under the first state key; the other keys can be removed\n", n, noun)
	return 0
}

const copyUsage = `usage: directus-bridge state copy -from OLD.yaml [-config NEW.yaml]

Copies the state of the configuration OLD.yaml into the state of the
configuration NEW.yaml: to move a bridge between a state file (bbolt) and
PostgreSQL, or to another file or database, without losing the tokens it
handed out. Records are copied as they are, their tokens sealed, with the
activity cursor. Only the state blocks of the two files need to be valid:
no Directus or admin token is needed.

The state key of NEW.yaml (state.key_env, else state.key_file) must be the
key of OLD.yaml's state, or hold it: it is checked before anything is
written, and the copy is opened with it after. A missing key file is not
created.

Stop the bridge first: a state held by a running server is refused. A
destination that holds anything is refused: nothing is overwritten or
merged. Then point the bridge at NEW.yaml and start it.
`

const copyExitCodes = `
exit codes: 0 copied and verified, 1 refused or failed (the source is never
changed; after a failure midway the destination holds part of the state:
empty it before copying again), 2 usage error.
`

func stateCopy(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("state copy", copyUsage, copyExitCodes, stderr)
	from := fs.String("from", "", "configuration file of the state to copy (required)")
	path := configFlag(fs)
	fs.Lookup("config").Usage = "configuration file of the state to copy into, the one the bridge will use (env DIRECTUS_BRIDGE_CONFIG)"
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "state copy", "unexpected argument %q", fs.Arg(0))
	}
	if *from == "" {
		return usageError(stderr, "state copy", "-from OLD.yaml is required: the configuration of the state to copy")
	}
	src, ok := loadStateBlock(*from, stderr)
	if !ok {
		return 1
	}
	dst, ok := loadStateBlock(*path, stderr)
	if !ok {
		return 1
	}
	srcName, dstName := stateName(src), stateName(dst)
	if sameState(src, dst) {
		fmt.Fprintf(stderr, "state copy: %s and %s name the same state, %s\n", *from, *path, srcName)
		return 1
	}
	keys, err := destinationKeys(dst)
	if err != nil {
		fmt.Fprintf(stderr, "state copy: %s: %v\n", *path, err)
		return 1
	}
	if src.State.Driver != driverPostgres {
		if _, err := os.Stat(src.State.Path); err != nil {
			fmt.Fprintf(stderr, "state copy: the source state file %s does not exist (or cannot be read)\n", src.State.Path)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	srcB, err := openBackend(ctx, src)
	if err != nil {
		return openFailed(stderr, "source", srcName, err)
	}
	defer srcB.Close()
	// The key is checked on the source before anything is written.
	s, err := bridge.NewStore(keepOpen{srcB}, keys...)
	if err != nil {
		fmt.Fprintf(stderr, "state copy: the state key of %s does not open the source's tokens (%v): it must be the source's state key, or hold it\n", *path, err)
		return 1
	}
	s.Close()
	to, err := openBackend(ctx, dst)
	if err != nil {
		return openFailed(stderr, "destination", dstName, err)
	}
	n, err := state.Copy(ctx, to, srcB)
	if errors.Is(err, state.ErrNotEmpty) {
		to.Close()
		fmt.Fprintf(stderr, "state copy: the destination state %s is not empty: a copy never overwrites or merges a state (%v)\n", dstName, err)
		return 1
	}
	if err != nil {
		to.Close()
		fmt.Fprintf(stderr, "state copy: %v\nthe source is unchanged; the destination %s holds the %d records written before the failure: %s before copying again\n", err, dstName, n, emptyIt(dst))
		return 1
	}
	srcB.Close()
	// Verify: the destination opens with its own configuration's keys.
	store, err := bridge.NewStore(to, keys...)
	if err != nil {
		to.Close()
		fmt.Fprintf(stderr, "state copy: copied %d records, but the state key of %s does not open them (%v): it must be the source's state key, or hold it; the copy is in place and opens once that key is configured\n", n, *path, err)
		return 1
	}
	_, hasCursor := store.Cursor()
	got := store.Len()
	if err := store.Close(); err != nil {
		fmt.Fprintf(stderr, "state copy: close the destination: %v\n", err)
		return 1
	}
	if got != n {
		fmt.Fprintf(stderr, "state copy: copied %d records, but the destination holds %d\n", n, got)
		return 1
	}
	noun := "records"
	if n == 1 {
		noun = "record"
	}
	cursor := " (no activity cursor)"
	if hasCursor {
		cursor = " and the activity cursor"
	}
	fmt.Fprintf(stdout, "copied %d %s%s from %s to %s\n", n, noun, cursor, srcName, dstName)
	return 0
}

// loadStateBlock reads a configuration of which only the state block must
// be valid: the other problems do not count.
func loadStateBlock(path string, stderr io.Writer) (*Config, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return nil, false
	}
	c, ps := checkConfig(b)
	if c == nil {
		report(stderr, path, ps)
		return nil, false
	}
	ps = slices.DeleteFunc(ps, func(p Problem) bool { return p.Path != "" && !under(p.Path, "state") })
	if len(ps) > 0 {
		report(stderr, path, ps)
		return nil, false
	}
	return c, true
}

// stateName names a state for messages: never the DSN.
func stateName(c *Config) string {
	if c.State.Driver == driverPostgres {
		return fmt.Sprintf("postgres (DSN from %s)", c.State.DSNEnv)
	}
	return fmt.Sprintf("bbolt (%s)", c.State.Path)
}

func sameState(a, b *Config) bool {
	if a.State.Driver != b.State.Driver {
		return false
	}
	if a.State.Driver == driverPostgres {
		return os.Getenv(a.State.DSNEnv) == os.Getenv(b.State.DSNEnv)
	}
	pa, erra := filepath.Abs(a.State.Path)
	pb, errb := filepath.Abs(b.State.Path)
	if erra == nil && errb == nil && pa == pb {
		return true
	}
	fa, erra := os.Stat(a.State.Path)
	fb, errb := os.Stat(b.State.Path)
	return erra == nil && errb == nil && os.SameFile(fa, fb)
}

// destinationKeys loads the destination's state keys without creating a
// key file: a new random key would open nothing of the copy.
func destinationKeys(c *Config) ([][]byte, error) {
	if v := os.Getenv(c.State.KeyEnv); v != "" {
		return bridge.LoadKeys(v, "")
	}
	if c.State.KeyFile == "" {
		return nil, fmt.Errorf("no state key: set %s or state.key_file to the source's state key", c.State.KeyEnv)
	}
	if _, err := os.Stat(c.State.KeyFile); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is not set and the state key file %s does not exist: put the source's state key in one of them", c.State.KeyEnv, c.State.KeyFile)
	}
	return bridge.LoadKeys("", c.State.KeyFile)
}

// openBackend opens the state of c itself: no key is needed to copy.
func openBackend(ctx context.Context, c *Config) (state.Backend, error) {
	if c.State.Driver == driverPostgres {
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return pgstate.Open(octx, os.Getenv(c.State.DSNEnv))
	}
	return boltstate.Open(c.State.Path)
}

func openFailed(stderr io.Writer, which, name string, err error) int {
	if errors.Is(err, state.ErrHeld) {
		fmt.Fprintf(stderr, "state copy: the %s state %s is held by a running directus-bridge: stop the server first\n", which, name)
		return 1
	}
	fmt.Fprintf(stderr, "state copy: open the %s state %s: %v\n", which, name, err)
	return 1
}

// emptyIt says how to empty the destination after a failed copy.
func emptyIt(c *Config) string {
	if c.State.Driver == driverPostgres {
		return "drop its tables (directus_bridge_*) in the DSN's schema"
	}
	return "delete the file"
}

// keepOpen lends a Backend to a Store that must not close it.
type keepOpen struct{ state.Backend }

func (keepOpen) Close() error { return nil }
