package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaseTaken is the log line of a replica that takes the jobs lease.
const leaseTaken = "jobs lease taken"

// startReplicas starts n serve processes, each with config(port), one
// after the other (each ready before the next starts), and fails the test
// if one of them exits.
func startReplicas(t *testing.T, d DirectusInstance, n int, config func(port int) string) []*process {
	t.Helper()
	procs := make([]*process, n)
	for i := range procs {
		port := freePort(t)
		p := startBinary(t, d, config(port), port)
		select {
		case err := <-p.done:
			t.Fatalf("replica %d exited: %v\n%s", i, err, p.logs.String())
		default:
		}
		if !strings.Contains(p.logs.String(), "replica of a shared state") {
			t.Fatalf("replica %d does not say it is a replica of a shared state:\n%s", i, p.logs.String())
		}
		procs[i] = p
	}
	return procs
}

var tokensLine = regexp.MustCompile(`(?m)^tokens: \{.*\}$`)

// withTokens replaces the tokens block of a binaryConfig configuration.
func withTokens(t *testing.T, config, ttl, rotateBefore, revokeInterval string) string {
	t.Helper()
	if !tokensLine.MatchString(config) {
		t.Fatal("the configuration has no tokens line to replace")
	}
	return tokensLine.ReplaceAllLiteralString(config,
		fmt.Sprintf("tokens: {ttl: %s, rotate_before: %s, revoke_interval: %s}", ttl, rotateBefore, revokeInterval))
}

// subjectClient is a client registered at the IdP with a subject token.
type subjectClient struct {
	id, subject, user string
}

// newClients registers n clients at the auth0 issuer (scope items:read)
// and gets a subject token for each.
func newClients(t *testing.T, n int) []subjectClient {
	t.Helper()
	auth0 := stack.IdP.Issuers["auth0"]
	out := make([]subjectClient, n)
	for i := range out {
		id, secret := auth0.registerClient(t, "", "items:read", 600)
		out[i] = subjectClient{id: id, subject: auth0.token(t, id, secret, "", ""), user: userID(id + "@clients")}
	}
	return out
}

// tryExchange is postExchange for goroutines: a transport error is an
// answer with status -1 (never t.Fatal off the test's goroutine).
func tryExchange(p *process, subject string, limit time.Duration) exchanged {
	r, err := postExchange(p.url, subject, limit)
	if err != nil && r.status == 0 {
		return exchanged{status: -1, body: map[string]any{"transport_error": err.Error()}}
	}
	return r
}

// metrics reads a replica's /metrics as series (name and labels, as
// printed) -> value.
func metrics(t *testing.T, p *process) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// metricSum sums the series of name whose labels contain every one of
// with and none of without (each a `label="value"` text).
func metricSum(m map[string]float64, name string, with, without []string) float64 {
	var sum float64
next:
	for series, v := range m {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		for _, w := range with {
			if !strings.Contains(series, w) {
				continue next
			}
		}
		for _, w := range without {
			if strings.Contains(series, w) {
				continue next
			}
		}
		sum += v
	}
	return sum
}

// stateKeys reads every key of the schema's records table, straight from
// PostgreSQL.
func stateKeys(t *testing.T, dsn, schema string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT key FROM `+schema+`.directus_bridge_records`)
	if err != nil {
		t.Fatalf("read the records' keys: %v", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read the records' keys: %v", err)
	}
	out := map[string]bool{}
	for _, k := range keys {
		out[k] = true
	}
	return out
}

// kill ends p with SIGKILL and waits for it.
func kill(t *testing.T, p *process) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the clean-up's wait
}

// running fails the test if p exited.
func running(t *testing.T, name string, p *process) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("%s exited: %v\n%s", name, err, p.logs.String())
	default:
	}
}
