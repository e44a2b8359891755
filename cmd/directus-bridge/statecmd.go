package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

const stateUsage = `usage: directus-bridge state reseal [-config FILE]

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
	if len(args) == 0 || args[0] != "reseal" {
		fmt.Fprint(stderr, stateUsage)
		return 2
	}
	fs := newFlagSet("state reseal", stateUsage, "", stderr)
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
	store, err := openStore(ctx, cfg)
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
